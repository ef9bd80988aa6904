import pytest

from controlplane import AgentSpec, TaskSpec
from controlplane._core.prompts import build_messages, output_schema, parse_output

AGENT = AgentSpec(name="cw", role="copywriter", instructions="Write crisp copy.")


def test_prompt_has_role_task_context_and_memory():
    task = TaskSpec(id="copy", description="Write the tagline", agent="cw", depends_on=["research"],
                    expected_output="one line")
    msgs = build_messages(AGENT, goal="Launch X", task=task, context={"research": "x" * 1000},
                          memory_hits=["Buyers like speed"])
    assert msgs[0] == {"role": "system", "content": "You are the copywriter of a team. Write crisp copy."}
    user = msgs[1]["content"]
    assert "Launch X" in user and "Write the tagline" in user and "[research] xxx" in user
    assert "x" * 600 not in user and "Buyers like speed" in user and "Expected output: one line" in user


def test_structured_output_is_parsed_or_rejected():
    task = TaskSpec(id="t", description="d", agent="cw", expected_output={"type": "object"})
    assert output_schema(task) == {"type": "object"}
    assert parse_output(task, '{"a": 1}') == {"a": 1}
    with pytest.raises(ValueError, match="invalid JSON"):
        parse_output(task, "{oops")
    plain = TaskSpec(id="t", description="d", agent="cw")
    assert output_schema(plain) is None and parse_output(plain, " hi \n") == "hi"
