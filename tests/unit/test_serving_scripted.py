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
