import pickle

import pytest

from controlplane.errors import (
    AccessDenied,
    BackpressureError,
    BudgetExceeded,
    ControlPlaneError,
    MissionNotFound,
    ReplicaUnavailable,
    SetupError,
    SpecError,
    is_retryable,
)

EXAMPLES = [
    SpecError(where="m.yaml: agents[1].resources.num_gpus", value=0.5, why="the cluster has 0 GPUs", fix="set 0"),
    SetupError(what="The default model is missing", fix="run `make setup`"),
    ReplicaUnavailable(model="default", why="circuit open"),
    BackpressureError(scope="agent 'writer'", limit="requests/min", retry_after_s=1.5),
    BudgetExceeded(scope="mission 'm'", budget="max_tokens", limit=100, used=120),
    AccessDenied(agent="writer", resource="legal", granted=["shared", "writer"]),
    MissionNotFound(mission_id="m-1", known=["m-2"]),
]


@pytest.mark.parametrize("error", EXAMPLES, ids=lambda e: type(e).__name__)
def test_errors_survive_pickling_between_processes(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.fields == error.fields
    assert isinstance(copy, ControlPlaneError)


def test_a_mission_not_found_lists_the_first_known_ids_and_counts_the_rest():
    error = MissionNotFound(mission_id="m-0", known=[f"m-{i:02d}" for i in range(25, 0, -1)])
    assert str(error) == ("No mission 'm-0' is running or recorded; known: m-01, m-02, m-03, m-04, m-05, m-06, m-07, "
                          "m-08, m-09, m-10 and 15 more. Fix: use one of the known ids")
    assert len(error.known) == 25


def test_a_spec_error_with_other_problems_keeps_them_across_processes():
    error = SpecError.of([SpecError(where="a", value=1, why="w1", fix="f1"),
                          SpecError(where="b", value=2, why="w2", fix="f2")]).located("m.yaml: ")
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) == "m.yaml: a: 1 is invalid: w1. Fix: f1\nAlso: m.yaml: b: 2 is invalid: w2. Fix: f2"
    assert [(problem.where, problem.value) for problem in copy.also] == [("m.yaml: b", 2)]


def test_a_spec_error_lists_twenty_other_problems_and_counts_the_rest():
    error = SpecError.of([SpecError(where=f"tasks[{i}]", value=i, why="w", fix="f") for i in range(30)])
    lines = str(error).splitlines()
    assert len(lines) == 22 and lines[20].startswith("Also: tasks[20]: 20 is invalid")
    assert lines[21] == "... and 9 more problems (the error's `also` holds them all)" and len(error.also) == 29


def test_spec_error_names_where_value_why_and_fix():
    message = str(EXAMPLES[0])
    for part in ("agents[1].resources.num_gpus", "0.5", "the cluster has 0 GPUs", "Fix: set 0"):
        assert part in message


def test_retryable_on_the_class_is_the_one_switch_for_retries():
    assert [type(e).__name__ for e in EXAMPLES if is_retryable(e)] == ["ReplicaUnavailable", "BackpressureError"]
    assert EXAMPLES[3].retry_after_s == 1.5
    assert is_retryable(ValueError("a malformed reply")) and is_retryable(RuntimeError("the actor died"))


def test_spec_error_from_a_pydantic_error_names_the_field_path_and_value():
    from pydantic import BaseModel, ValidationError

    class Inner(BaseModel):
        k: int

    class Outer(BaseModel):
        inner: Inner

    try:
        Outer.model_validate({"inner": {"k": "many"}})
    except ValidationError as exc:
        error = SpecError.from_validation(exc, where="cfg.yaml: ", fix="give k a number")
    assert error.where == "cfg.yaml: inner.k" and error.value == "many"
    assert "Fix: give k a number" in str(error)


def test_spec_error_from_a_pydantic_error_names_list_items_and_reports_each_place_once():
    from typing import Any

    from pydantic import BaseModel, ValidationError, field_validator

    class Item(BaseModel):
        name: str
        size: int

        @field_validator("size")
        @classmethod
        def _positive(cls, size: int) -> int:
            if size <= 0:
                raise ValueError("a size is positive")
            return size

    class Box(BaseModel):
        items: list[Item]
        label: str | dict[str, Any]

    data = {"items": [{"name": "cup", "size": 1}, {"name": "pan", "size": -2}], "label": 5}
    try:
        Box.model_validate(data)
    except ValidationError as exc:
        error = SpecError.from_validation(exc, where="box.yaml: ", fix="correct it", data=data,
                                          fixes={"string_type": "write text"})
    assert [(p.where, p.value, p.why, p.fix) for p in (error, *error.also)] == [
        ("box.yaml: items[1](pan).size", -2, "a size is positive", "correct it"),
        ("box.yaml: label", 5, "Input should be a valid string", "write text")]  # the union's two members: once
