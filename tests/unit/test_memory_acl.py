import pickle

import pytest

from controlplane.errors import AccessDenied
from memory._acl import AccessControl


def test_grants_read_write_and_supervisor():
    acl = AccessControl()
    acl.grant("alice", read=["shared"], write=["alice"])
    assert acl.can_read("alice", "shared") and acl.can_read("alice", "alice")  # write implies read
    assert acl.can_write("alice", "alice") and not acl.can_write("alice", "shared")
    assert acl.can_read("supervisor", "anything") and not acl.can_write("supervisor", "alice")
    assert not acl.can_read("nobody", "shared")
    assert acl.namespaces() == {"shared", "alice"}


def test_denial_names_agent_namespace_and_grants_and_is_counted():
    acl = AccessControl()
    acl.grant("alice", read=["shared"], write=["alice"])
    for _ in range(2):
        with pytest.raises(AccessDenied) as denied:
            acl.check_write("alice", "shared")
    error = pickle.loads(pickle.dumps(denied.value))  # crosses Ray process boundaries intact
    assert error.agent == "alice" and error.granted == ["alice"] and "shared" in str(error)
    assert acl.denials == {("alice", "write", "shared"): 2}


def test_regrant_replaces_and_state_round_trips():
    acl = AccessControl()
    acl.grant("alice", read=["a"], write=["b"])
    acl.grant("alice", read=["c"], write=[])
    assert not acl.can_read("alice", "a") and acl.can_read("alice", "c")
    copy = AccessControl()
    copy.restore(acl.state())
    assert copy.state() == acl.state()


def test_the_acl_name_of_a_token_comes_from_its_role_and_agent():
    from controlplane._core.identity import Claims
    from controlplane.errors import ScopeDenied
    from memory._acl import SUPERVISOR, principal_of

    def claims(agent, role="agent"):
        return Claims(mission_id="m", agent_id=agent, role=role, expires_at_s=1.0)

    assert principal_of(claims("alice")) == "alice"
    assert principal_of(claims("planner", role="supervisor")) == SUPERVISOR  # any control identity reads as it
    with pytest.raises(ScopeDenied, match="control-plane identity"):
        principal_of(claims("supervisor"))  # an agent token that names the supervisor never reads everything
