"""AgentSlots: the least-loaded free agent of a target takes its next task, ties to the one assigned least recently;
a held or full agent takes none."""

from controlplane._core.agent_slots import AgentSlots
from controlplane.config.mission import AgentSpec


def _slots() -> AgentSlots:
    return AgentSlots([AgentSpec(name="a", role="writer", max_concurrency=2),
                       AgentSpec(name="b", role="writer", max_concurrency=1),
                       AgentSpec(name="c", role="critic")])


def test_a_role_task_goes_to_the_least_loaded_agent_then_the_one_assigned_least_recently():
    slots = _slots()
    assert slots.serves("role:writer") == ["a", "b"] and slots.serves("c") == ["c"] and slots.serves("x") == []
    slots.start("b")
    assert slots.free_agent("role:writer") == "a"  # b runs one, a none
    slots.start("a")
    assert slots.free_agent("role:writer") == "a"  # b is full
    slots.done("a")
    slots.done("b")
    assert slots.free_agent("role:writer") == "b"  # both idle: b was assigned before a
    assert slots.in_flight() == 0


def test_a_held_agent_takes_no_task_until_released_and_a_resumed_task_counts_against_its_capacity():
    slots = _slots()
    slots.hold("c")
    assert slots.free_agent("c") is None
    slots.release("c")
    slots.resume("c")
    assert slots.free_agent("c") is None and slots.running["c"] == 1
