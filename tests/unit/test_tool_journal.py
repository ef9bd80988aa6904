"""A side-effecting tool runs once per task across attempts and restarts; a call in doubt is refused unless idempotent.

The supervisor's journal desk runs for real on a mission log in tmp_path; only Ray's `.remote` is faked.
"""

import asyncio

import pytest

from actors._tool_journal import JournaledToolRunner, ToolJournalDesk
from controlplane._core.loop_types import ToolCall
from controlplane._core.recovery import replay
from controlplane._core.tools import Authorization, ToolSpec
from controlplane._logfile import MissionLogWriter, read_log
from controlplane.errors import ToolCallInDoubt


class Remote:
    def __init__(self, fn):
        self.fn = fn

    def remote(self, **kwargs):
        return self.fn(**kwargs)


class FakeSupervisor:
    """The supervisor's two journal methods, over a real desk."""

    def __init__(self, desk: ToolJournalDesk) -> None:
        self.tool_intent = Remote(lambda **kw: desk.intent(actor="a", **kw))
        self.tool_result = Remote(lambda **kw: desk.result(actor="a", **kw))


def runner(desk, effects, *, idempotent=False, attempt=1, tool=None):
    """A journaled runner with one side-effecting tool `send`: `tool(args)`, by default a mail that is sent."""
    async def send(args: dict) -> str:
        effects.append(args["to"])
        return f"sent to {args['to']}"

    spec = ToolSpec(name="send", description="send a mail", parameters={"type": "object"}, side_effects=True,
                    idempotent=idempotent)
    return JournaledToolRunner(supervisor=FakeSupervisor(desk), task="t", attempt_key=f"m/t/{attempt}",
                               call_prefix="m/t", functions={}, builtins={"send": (spec, tool or send)}), spec


def call(spec):
    door = Authorization(decision="allowed", agent="a", tool="send", arguments_digest="x")
    return ToolCall(id="c1", tool=spec, arguments={"to": "bob"}, authorization=door)


def test_a_recorded_call_is_replayed_on_the_next_attempt_and_after_a_restart(tmp_path):
    effects = []
    writer = MissionLogWriter(str(tmp_path))
    desk = ToolJournalDesk(writer, replay([]).tools)
    first, spec = runner(desk, effects)
    assert asyncio.run(first.run(call(spec))).content == "sent to bob"
    retry, _ = runner(desk, effects, attempt=2)
    assert asyncio.run(retry.run(call(spec))).content == "sent to bob"
    writer.close()
    restarted = MissionLogWriter(str(tmp_path))  # a new supervisor: its journal comes from the log
    after_restart, _ = runner(ToolJournalDesk(restarted, replay(read_log(str(tmp_path))).tools), effects, attempt=2)
    assert asyncio.run(after_restart.run(call(spec))).ok
    restarted.close()
    assert effects == ["bob"]  # executed once


@pytest.mark.parametrize("idempotent", [False, True])
def test_a_call_in_flight_at_a_crash_is_rerun_only_when_idempotent(tmp_path, idempotent):
    effects = []
    writer = MissionLogWriter(str(tmp_path))
    desk = ToolJournalDesk(writer, replay([]).tools)
    _, spec = runner(desk, effects, idempotent=idempotent)
    verdict = asyncio.run(desk.intent(actor="a", call_key="m/t/call/0", tool="send", task="t", attempt_key="m/t/1",
                                      call_index=0, args_digest="x", side_effects=True, idempotent=idempotent))
    assert verdict["action"] == "execute"  # ... and the agent died before recording the result
    writer.close()
    restarted = MissionLogWriter(str(tmp_path))
    rerun, _ = runner(ToolJournalDesk(restarted, replay(read_log(str(tmp_path))).tools), effects,
                      idempotent=idempotent, attempt=2)
    if idempotent:
        assert asyncio.run(rerun.run(call(spec))).ok and effects == ["bob"]
    else:
        with pytest.raises(ToolCallInDoubt, match="send"):
            asyncio.run(rerun.run(call(spec)))
        assert effects == []
    restarted.close()


def test_a_python_agents_call_gets_the_recorded_value_back_on_the_next_attempt(tmp_path):
    """`ctx.tools.call` (a `kind: python` agent) goes through `invoke`: the value, not the model's text."""
    effects = []
    writer = MissionLogWriter(str(tmp_path))
    desk = ToolJournalDesk(writer, replay([]).tools)

    async def book(args: dict) -> dict:
        effects.append(args["to"])
        return {"booking": 7, "to": args["to"]}

    for attempt in (1, 2):
        runner_, spec = runner(desk, effects, attempt=attempt, tool=book)
        assert asyncio.run(runner_.invoke(call(spec))) == {"booking": 7, "to": "bob"}
    writer.close()
    assert effects == ["bob"]


def test_a_recorded_failure_is_replayed_as_the_same_error_without_running_again(tmp_path):
    attempts = []
    writer = MissionLogWriter(str(tmp_path))
    desk = ToolJournalDesk(writer, replay([]).tools)

    async def flaky(args: dict) -> str:
        attempts.append(args["to"])
        raise RuntimeError("the mail server said no")

    contents = []
    for attempt in (1, 2):
        runner_, spec = runner(desk, attempts, attempt=attempt, tool=flaky)
        result = asyncio.run(runner_.run(call(spec)))
        assert not result.ok
        contents.append(result.content)
    writer.close()
    assert attempts == ["bob"]
    assert contents == ["Error: tool 'send' failed: RuntimeError: the mail server said no"] * 2


def test_a_delegation_is_journaled_by_the_supervisor_in_one_call_and_replayed_on_the_next_attempt(tmp_path):
    """`delegate` runs in the supervisor: the agent sends the intent with the call, not before and after it."""
    children, calls = [], []
    writer = MissionLogWriter(str(tmp_path))
    desk = ToolJournalDesk(writer, replay([]).tools)

    async def add_child(to: str) -> str:
        children.append(to)
        return f"{to} did it"

    def delegate(args: dict, intent: dict):
        calls.append("delegate")
        return desk.run(intent, lambda: add_child(args["to"]), actor="a")

    supervisor = FakeSupervisor(desk)
    supervisor.tool_intent = supervisor.tool_result = Remote(lambda **kw: calls.append("journal"))
    spec = ToolSpec(name="send", description="hand work over", parameters={"type": "object"}, side_effects=True)
    for attempt in (1, 2):
        runner_ = JournaledToolRunner(supervisor=supervisor, task="t", attempt_key=f"m/t/{attempt}", call_prefix="m/t",
                                      functions={}, builtins={}, supervisor_builtins={"send": (spec, delegate)})
        assert "send" in runner_.specs()
        assert asyncio.run(runner_.run(call(spec))).content == "bob did it"
    writer.close()
    assert children == ["bob"] and calls == ["delegate", "delegate"]
    assert [r.kind for r in read_log(str(tmp_path))] == ["tool.intent", "tool.result"]


def test_the_same_supervisor_run_call_made_twice_at_once_runs_once_and_both_callers_get_its_result(tmp_path):
    """A dead supervisor's `delegate` call that Ray retried, and the same call from the relaunched attempt."""
    writer = MissionLogWriter(str(tmp_path))
    desk = ToolJournalDesk(writer, replay([]).tools)
    intent = {"call_key": "m/t/1/call/0", "tool": "delegate", "task": "t", "attempt_key": "m/t/1", "call_index": 0,
              "args_digest": "d", "side_effects": True, "idempotent": True}
    runs = []

    async def child_output() -> str:
        runs.append(1)
        await asyncio.sleep(0.01)
        return "done"

    async def both():
        return await asyncio.gather(*(desk.run(intent, child_output, actor="a") for _ in range(2)))

    assert asyncio.run(both()) == ["done", "done"] and runs == [1]
    writer.close()
    assert [r.kind for r in read_log(str(tmp_path))] == ["tool.intent", "tool.result"]
