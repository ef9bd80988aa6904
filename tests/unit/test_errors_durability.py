"""The errors added for durability survive pickling between processes and say what to do."""

import pickle

import pytest

from controlplane.errors import DeadlineExceeded, MissionLogError, OutputTruncated, ToolCallInDoubt

EXAMPLES = [
    DeadlineExceeded(what="The call to model 'default'", timeout_s=2.0),
    OutputTruncated(task="plan", max_tokens=256),
    ToolCallInDoubt(tool="send_email", call_key="m1/t/1/call/0", args_digest="sha256:ab"),
    MissionLogError(uri="runs/m1", seq=4, why="its hash does not match"),
]


@pytest.mark.parametrize("error", EXAMPLES, ids=lambda e: type(e).__name__)
def test_survives_pickling_and_names_a_fix(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error) and copy.fields == error.fields
    assert "Fix:" in str(error)
