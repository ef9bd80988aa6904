"""A router call's identity comes from its credentials: a forged, expired or missing one is refused."""

import pytest

from controlplane._core.identity import mint_token, mission_key
from controlplane.errors import IdentityError, ScopeDenied
from serving._auth import identity_from_headers, identity_from_token
from serving._keys import ApiKeyStore
from serving._types import Identity

ROOT = b"k" * 32
NOW = 1_000_000.0


def token(agent="writer", *, root=ROOT, role="agent", priority="normal", expires_at_s=NOW + 60):
    return mint_token(mission_key(root, "m1"), mission_id="m1", agent_id=agent, role=role, priority=priority,
                      expires_at_s=expires_at_s)


@pytest.fixture
def keys(tmp_path):
    return ApiKeyStore(tmp_path / "api_keys.json")


def http(headers, keys, *, allow_anonymous=False):
    return identity_from_headers(headers, root_secret=ROOT, keys=keys, allow_anonymous=allow_anonymous, now_s=NOW)


def test_the_token_names_the_caller_whatever_the_request_says():
    assert identity_from_token(ROOT, token(), None, now_s=NOW) == Identity(mission_id="m1", agent_id="writer")
    assert identity_from_token(ROOT, token(), "bulk", now_s=NOW).priority == "bulk"
    with pytest.raises(IdentityError, match="above"):
        identity_from_token(ROOT, token(), "control", now_s=NOW)
    planner = token("planner", role="supervisor", priority="control")
    assert identity_from_token(ROOT, planner, "control", now_s=NOW).priority == "control"


@pytest.mark.parametrize(("bad", "needle"), [(None, "no capability token"), ("", "no capability token"),
                                              (token(root=b"z" * 32), "signature"),
                                              (token(expires_at_s=NOW), "expired")])
def test_missing_forged_and_expired_tokens_are_refused(bad, needle):
    with pytest.raises(IdentityError, match=needle):
        identity_from_token(ROOT, bad, None, now_s=NOW)


def test_http_without_credentials_is_refused_unless_anonymous_use_is_allowed(keys):
    with pytest.raises(IdentityError, match="no `Authorization: Bearer <key>`"):
        http({"x-agent-id": "writer", "x-mission-id": "m1"}, keys)
    assert http({}, keys, allow_anonymous=True) == (Identity(), None)
    with pytest.raises(IdentityError, match="scheme 'Basic'"):
        http({"authorization": "Basic dXNlcjpwdw=="}, keys)


def test_http_with_an_api_key_narrows_inside_its_scope(keys):
    clear, scope = keys.create("ci", kind="mission", scope_id="launch", agents=["writer"], now_s=NOW)
    identity, found = http({"authorization": f"Bearer {clear}", "x-agent-id": "writer", "x-priority": "bulk"}, keys)
    assert identity == Identity(mission_id="launch", agent_id="writer", priority="bulk") and found == scope
    with pytest.raises(IdentityError, match="outside"):
        http({"authorization": f"Bearer {clear}", "x-agent-id": "reviewer"}, keys)
    with pytest.raises(ScopeDenied, match="never granted over the HTTP API"):
        http({"authorization": f"Bearer {clear}", "x-priority": "control"}, keys)
    keys.revoke(scope.id, now_s=NOW)
    with pytest.raises(IdentityError, match="unknown, revoked or expired"):
        http({"authorization": f"Bearer {clear}"}, keys)


def test_http_with_a_capability_token_refuses_headers_that_name_someone_else(keys):
    identity, scope = http({"authorization": f"Bearer {token()}", "x-agent-id": "writer"}, keys)
    assert (identity.mission_id, identity.agent_id, scope) == ("m1", "writer", None)
    with pytest.raises(IdentityError, match="x-agent-id 'supervisor' differs from the capability token's 'writer'"):
        http({"authorization": f"Bearer {token()}", "x-agent-id": "supervisor"}, keys)
    with pytest.raises(IdentityError, match="x-mission-id"):
        http({"authorization": f"Bearer {token()}", "x-mission-id": "m2"}, keys)


def test_the_authenticator_lets_anonymous_handle_calls_in_only_when_the_config_says_so(keys):
    from serving._auth import Authenticator

    closed, open_ = (Authenticator(root_secret=ROOT, keys=keys, allow_anonymous=flag) for flag in (False, True))
    with pytest.raises(IdentityError, match="no capability token"):
        closed.for_handle(None, None, now_s=NOW)
    assert open_.for_handle(None, None, now_s=NOW) == Identity()
    with pytest.raises(ScopeDenied):
        open_.for_handle(None, "control", now_s=NOW)
    assert closed.for_handle(token(), "bulk", now_s=NOW) == Identity(mission_id="m1", agent_id="writer",
                                                                     priority="bulk")


def test_only_a_supervisor_token_may_take_a_supervisors_action(keys):
    from serving._auth import Authenticator

    door = Authenticator(root_secret=ROOT, keys=keys)
    claims = door.supervisor(token("supervisor", role="supervisor", priority="control"), action="set_budget",
                             now_s=NOW)
    assert claims.mission_id == "m1"
    with pytest.raises(ScopeDenied, match="set_budget needs the supervisor's token"):
        door.supervisor(token(), action="set_budget", now_s=NOW)
    with pytest.raises(IdentityError, match="signature"):
        door.supervisor(token("supervisor", role="supervisor", root=b"z" * 32), action="set_budget", now_s=NOW)
