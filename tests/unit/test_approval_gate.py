"""The supervisor's approval gate (asyncio, no Ray): a waiting call wakes on the decision, a timeout is a denial
by `timeout`, a stopping mission denies what waits, and every request and decision is an event."""

from __future__ import annotations

import asyncio

import pytest

pytest.importorskip("ray")  # `actors` imports Ray; nothing here starts it

from actors._approvals import ApprovalGate  # noqa: E402
from controlplane.cli import build_parser  # noqa: E402
from controlplane.errors import SpecError  # noqa: E402


def gate(events: list, timeout_s: float = 60.0) -> ApprovalGate:
    return ApprovalGate(emit=lambda now_s, kind, status, **fields: events.append((kind, status, fields)),
                        timeout_s=timeout_s)


def test_a_waiting_call_wakes_on_the_decision_and_both_are_events():
    events: list = []

    async def scenario():
        desk = gate(events)
        waiting = asyncio.ensure_future(desk.wait("t#1:c1", agent="a", tool="send", arg_digest="d1", task="t"))
        await asyncio.sleep(0)
        [pending] = desk.pending()
        assert not waiting.done() and pending["id"] == "ap-1" and pending["tool"] == "send"
        assert desk.waiting() == 1  # what `controlplane status` counts
        desk.decide("ap-1", approve=True, by="ana", reason="ok")
        assert desk.waiting() == 0
        return await waiting

    decided = asyncio.run(scenario())
    assert (decided.status, decided.decided_by, decided.reason) == ("approved", "ana", "ok")
    assert [(kind, status) for kind, status, _ in events] == [("approval", "requested"), ("approval", "approved")]
    assert events[0][2]["data"]["arg_digest"] == "d1" and events[0][2]["task"] == "t"


def test_the_person_who_decides_reads_the_calls_arguments_which_no_event_holds():
    events: list = []
    arguments = {"to": "ceo@example.com", "body": "Q3 numbers"}

    async def scenario():
        desk = gate(events)
        waiting = asyncio.ensure_future(desk.wait("c", agent="a", tool="send", arg_digest="d", arguments=arguments))
        await asyncio.sleep(0)
        [pending] = desk.pending()
        assert pending["arguments"] == arguments  # what `controlplane approvals` shows
        desk.decide(pending["id"], approve=False, by="ana", reason="wrong recipient")
        await waiting
        return desk

    desk = asyncio.run(scenario())
    assert desk.pending() == [] and desk._arguments == {}  # dropped once decided
    assert "ceo@example.com" not in repr(events)  # the mission log holds the digest only


def test_no_decision_in_time_is_a_denial_by_timeout():
    events: list = []
    decided = asyncio.run(gate(events, timeout_s=0.01).wait("c", agent="a", tool="send", arg_digest="d"))
    assert (decided.status, decided.decided_by) == ("denied", "timeout")
    assert events[-1][1] == "denied"


def test_a_call_past_its_deadline_is_no_longer_counted_as_waiting_and_its_denial_is_an_event():
    events: list = []

    async def scenario():
        desk = gate(events, timeout_s=0.05)
        waiting = asyncio.ensure_future(desk.wait("c", agent="a", tool="send", arg_digest="d"))
        await asyncio.sleep(0)
        counted = desk.waiting()
        waiting.cancel()  # the caller went away; only the deadline settles the approval now
        await asyncio.sleep(0.06)
        return counted, desk.waiting()

    assert asyncio.run(scenario()) == (1, 0)
    assert [status for _, status, _ in events] == ["requested", "denied"]


def test_a_stopping_mission_denies_what_waits_and_decisions_cannot_flip():
    events: list = []

    async def scenario():
        desk = gate(events)
        waiting = asyncio.ensure_future(desk.wait("c", agent="a", tool="send", arg_digest="d"))
        await asyncio.sleep(0)
        desk.deny_all("cancelled by user")
        decided = await waiting
        with pytest.raises(SpecError, match="already denied"):
            desk.decide(decided.id, approve=True, by="ana")
        assert desk.decide(decided.id, approve=False, by="bob").decided_by == "control-plane"  # same way: no-op
        return decided

    decided = asyncio.run(scenario())
    assert (decided.status, decided.reason) == ("denied", "cancelled by user")
    assert [status for _, status, _ in events] == ["requested", "denied"]


def test_a_gate_rebuilt_from_the_log_goes_on_where_the_dead_supervisors_left_off():
    events: list = []

    async def before_the_crash():
        desk = gate(events)
        decided = asyncio.ensure_future(desk.wait("t#1:c1", agent="a", tool="send", arg_digest="d1"))
        waiting = asyncio.ensure_future(desk.wait("t#1:c2", agent="a", tool="send", arg_digest="d2"))
        await asyncio.sleep(0)
        desk.decide("ap-1", approve=True, by="ana")
        await decided
        waiting.cancel()

    asyncio.run(before_the_crash())
    recorded: dict = {}  # as the log's replay merges them (controlplane._core.recovery)
    for _, _, fields in events:
        recorded[fields["data"]["id"]] = {**recorded.get(fields["data"]["id"], {}), **fields["data"]}
    after: list = []

    async def after_the_restart():
        desk = ApprovalGate(emit=lambda now_s, kind, status, **fields: after.append((status, fields["data"]["id"])),
                            timeout_s=60.0, recorded=recorded.values())
        again = await desk.wait("t#1:c1", agent="a", tool="send", arg_digest="d1")  # Ray retried the request
        waiting = asyncio.ensure_future(desk.wait("t#1:c2", agent="a", tool="send", arg_digest="d2",
                                                  arguments={"to": "ana"}))
        fresh = asyncio.ensure_future(desk.wait("t#1:c3", agent="a", tool="send", arg_digest="d3"))
        await asyncio.sleep(0)
        listed = desk.pending()
        desk.deny_all("the mission ended")
        await asyncio.gather(waiting, fresh)
        return again, listed

    again, listed = asyncio.run(after_the_restart())
    assert (again.id, again.status, again.decided_by) == ("ap-1", "approved", "ana")  # the decision stands
    assert [(a["id"], a["arguments"]) for a in listed] == [("ap-2", {"to": "ana"}), ("ap-3", None)]
    assert listed[0]["deadline_s"] == recorded["ap-2"]["deadline_s"]  # it waits to its first deadline
    assert after == [("requested", "ap-3"), ("denied", "ap-2"), ("denied", "ap-3")]  # ids go on; none asked twice


def test_the_governance_commands_parse():
    parser = build_parser()
    args = parser.parse_args(["deny", "RUN", "ap-2", "--reason", "too risky"])
    assert (args.command, args.mission_id, args.approval_id, args.reason) == ("deny", "RUN", "ap-2", "too risky")
    assert parser.parse_args(["approvals", "RUN"]).mission_id == "RUN"
    assert parser.parse_args(["stop", "--all"]).all


def test_approvals_prints_long_arguments_shortened_json_prints_them_whole_and_unknown_ones_say_why(
        monkeypatch, capsys, tmp_path):
    import json
    import time

    import actors
    from controlplane.cli import governance, main

    waiting = [{"id": "ap-1", "tool": "send", "agent": "a", "call_id": "t#1:c1", "arg_digest": "d" * 64,
                "deadline_s": time.time() + 60, "arguments": {"body": "x" * 1000}},
               {"id": "ap-2", "tool": "send", "agent": "a", "call_id": "t#1:c2", "arg_digest": "e" * 64,
                "deadline_s": time.time() + 60, "arguments": None}]  # asked of a supervisor that since restarted
    monkeypatch.setattr(governance, "connect", lambda *args: True)
    monkeypatch.setattr(actors, "approvals", lambda mission_id: waiting)
    runs = ["--runs-dir", str(tmp_path)]
    assert main(["approvals", "m-1", *runs]) == 0
    shown = capsys.readouterr().out
    assert f'arguments: {{"body": "{"x" * (governance.ARGUMENTS_SHOWN_CHARS - 10)}' in shown
    assert "... (1012 characters; --json prints them whole)" in shown
    assert "arguments: not known yet: the mission's supervisor restarted" in shown
    assert main(["approvals", "m-1", "--json", *runs]) == 0
    assert json.loads(capsys.readouterr().out)[0]["arguments"] == {"body": "x" * 1000}
