import json

from serving._backends.scripted import ScriptedEngine, count_tokens, truncate

ENGINE = ScriptedEngine([{"match": "(?i)capital", "text": "Paris"}, {"match": "json", "text": '{"ok": true}'}])


def user(text: str) -> list[dict]:
    return [{"role": "system", "content": "s"}, {"role": "user", "content": text}]


def test_first_matching_rule_on_the_last_user_message():
    assert ENGINE.reply(user("The CAPITAL of France?")) == "Paris"


def test_no_match_is_deterministic_from_the_prompt():
    assert ENGINE.reply(user("hello there")) == ENGINE.reply(user("hello there")) == "scripted reply to: hello there"


def test_choice_answers_a_matching_choice_else_the_first():
    assert ENGINE.reply(user("capital?"), choice=["Rome", "Paris"]) == "Paris"
    assert ENGINE.reply(user("other"), choice=["agree", "disagree"]) == "agree"


def test_json_schema_answers_the_matching_json():
    assert json.loads(ENGINE.reply(user("json"), json_schema={"type": "object"})) == {"ok": True}


def test_truncate_counts_words():
    assert truncate("a b c d", 2) == ("a b", "length")
    assert truncate("a b", 2) == ("a b", "stop")
    assert count_tokens("a b  c") == 3


def test_an_unscripted_json_reply_is_the_smallest_valid_instance_and_ends_an_agents_turn():
    import jsonschema

    from controlplane._core.actions import action_schema, final_value_schema
    from controlplane._core.builtins import MEMORY_SEARCH_TOOL

    schema = action_schema([MEMORY_SEARCH_TOOL], final_value_schema(None), max_string_chars=40)
    reply = json.loads(ScriptedEngine([]).reply([{"role": "user", "content": "Plan the launch"}], json_schema=schema))
    jsonschema.validate(reply, schema)
    assert set(reply) == {"final"} and reply["final"].startswith("scripted reply to: Plan")
    price = {"type": "object", "required": ["amount", "tags"],
             "properties": {"amount": {"type": "number"}, "tags": {"type": "array", "minItems": 1,
                                                                   "items": {"type": "string", "maxLength": 3}}}}
    assert json.loads(ScriptedEngine([]).reply([{"role": "user", "content": "x"}], json_schema=price)) == {
        "amount": 0, "tags": ["scr"]}
