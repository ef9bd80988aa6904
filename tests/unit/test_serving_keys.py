"""HTTP API keys: stored as hashes only; a key's scope bounds every identity its bearer can take."""

import json
import stat

import pytest

from controlplane.errors import IdentityError, SpecError
from serving._keys import KEY_PREFIX, ApiKeyStore, hash_key, narrow_identity, revoke_if_seen
from serving._types import Identity

NOW = 1_000_000.0


@pytest.fixture
def store(tmp_path):
    return ApiKeyStore(tmp_path / "keys" / "api_keys.json")


def test_create_shows_the_key_once_and_stores_only_its_hash(store):
    clear, scope = store.create("ci", kind="mission", scope_id="launch", agents=["writer"], rpm=60, tpm=10_000,
                                now_s=NOW)
    assert clear.startswith(KEY_PREFIX) and len(clear) > 40
    text = store.path.read_text()
    assert clear not in text and clear[len(KEY_PREFIX):] not in text
    assert json.loads(text)["keys"][0]["sha256"] == hash_key(clear)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.lookup(clear, now_s=NOW) == scope
    assert (scope.kind, scope.scope_id, scope.agents, scope.rpm, scope.tpm) == ("mission", "launch", ("writer",), 60,
                                                                                10_000)


def test_list_shows_no_secrets(store):
    clear, _ = store.create("ci", kind="team", scope_id="research", now_s=NOW)
    listed = store.list()
    assert [k.name for k in listed] == ["ci"]
    dumped = json.dumps([k.model_dump() for k in listed])
    assert clear not in dumped and hash_key(clear) not in dumped


def test_unknown_revoked_and_expired_keys_find_nothing(store):
    clear, scope = store.create("ci", kind="mission", scope_id="launch", now_s=NOW)
    short, _ = store.create("short", kind="mission", scope_id="launch", expires_at_s=NOW + 10, now_s=NOW)
    assert store.lookup(KEY_PREFIX + "guessed", now_s=NOW) is None
    assert store.lookup(clear[:-1], now_s=NOW) is None
    assert store.lookup(short, now_s=NOW + 9) is not None
    assert store.lookup(short, now_s=NOW + 10) is None
    store.revoke(scope.id, now_s=NOW + 1)
    assert store.lookup(clear, now_s=NOW + 1) is None
    assert [k.revoked_at_s for k in store.list()] == [NOW + 1, None]


def test_a_revoke_by_another_process_reaches_a_running_lookup(store, tmp_path):
    clear, scope = store.create("ci", kind="mission", scope_id="launch", now_s=NOW)
    assert store.lookup(clear, now_s=NOW) is not None  # the router's store has it cached
    ApiKeyStore(store.path).revoke(scope.id, now_s=NOW)  # the CLI, elsewhere
    assert store.lookup(clear, now_s=NOW) is None


def test_a_replacing_create_revokes_the_active_key_of_its_name_in_the_same_write(store):
    old_clear, old = store.create("run-m", kind="mission", scope_id="m", now_s=NOW)
    new_clear, new = store.create("run-m", kind="mission", scope_id="m", now_s=NOW + 1, replace=True)
    assert store.lookup(old_clear, now_s=NOW + 1) is None and store.lookup(new_clear, now_s=NOW + 1) == new
    assert {k.id: k.revoked_at_s for k in store.list()} == {old.id: NOW + 1, new.id: None}


def test_a_supervisor_revokes_a_key_only_in_a_key_file_its_node_sees_and_makes_none(store, tmp_path):
    clear, scope = store.create("run-m", kind="mission", scope_id="m", now_s=NOW)
    copy, gone = tmp_path / "api_key", tmp_path / "never-written"
    copy.write_text(clear)
    assert revoke_if_seen(str(store.path), scope.id, str(copy), str(gone), now_s=NOW + 1)
    assert store.lookup(clear, now_s=NOW + 1) is None and not copy.exists()
    elsewhere = tmp_path / "driver-only" / "api_keys.json"
    assert not revoke_if_seen(str(elsewhere), scope.id, now_s=NOW + 1) and not elsewhere.parent.exists()


def test_bad_creates_and_revokes_are_spec_errors(store):
    store.create("ci", kind="mission", scope_id="launch", now_s=NOW)
    with pytest.raises(SpecError, match="already has this name"):
        store.create("ci", kind="mission", scope_id="launch", now_s=NOW)
    with pytest.raises(SpecError, match="reserved"):
        store.create("boss", kind="mission", scope_id="launch", agents=["supervisor"], now_s=NOW)
    with pytest.raises(SpecError, match="priority_ceiling"):
        store.create("boss", kind="mission", scope_id="launch", priority_ceiling="control", now_s=NOW)
    with pytest.raises(SpecError, match="name"):
        store.create("has space", kind="mission", scope_id="launch", now_s=NOW)
    with pytest.raises(SpecError, match="no key has this id"):
        store.revoke("nope", now_s=NOW)


def test_a_missing_key_file_means_no_keys(store):
    assert store.list() == [] and store.lookup(KEY_PREFIX + "x", now_s=NOW) is None


def _scope(store, **fields):
    return store.create(fields.pop("name", "ci"), now_s=NOW, **fields)[1]


def test_headers_narrow_inside_a_mission_key(store):
    scope = _scope(store, kind="mission", scope_id="launch", agents=["writer", "reviewer"])
    assert narrow_identity(scope, None, None) == Identity(mission_id="launch", agent_id="writer", priority="normal")
    assert narrow_identity(scope, "reviewer", "bulk", x_mission_id="launch") == Identity(
        mission_id="launch", agent_id="reviewer", priority="bulk")


@pytest.mark.parametrize(("agent", "mission", "needle"), [
    ("intruder", None, "x-agent-id 'intruder' is outside API key 'ci'"),
    ("supervisor", None, "reserved"),
    ("planner", None, "reserved"),
    ("writer", "other", "x-mission-id 'other' is outside"),
])
def test_spoofed_headers_outside_the_scope_are_refused(store, agent, mission, needle):
    scope = _scope(store, kind="mission", scope_id="launch", agents=["writer"])
    with pytest.raises(IdentityError, match=needle):
        narrow_identity(scope, agent, None, x_mission_id=mission)


def test_a_team_key_covers_its_missions_and_any_non_reserved_agent(store):
    scope = _scope(store, name="alice", kind="team", scope_id="research")
    assert narrow_identity(scope, None, None).mission_id == "research"
    assert narrow_identity(scope, None, None).agent_id == "alice"
    assert narrow_identity(scope, "bot", None, x_mission_id="research/q3").mission_id == "research/q3"
    for outside in ("research2", "research/", "other/research"):
        with pytest.raises(IdentityError, match="outside"):
            narrow_identity(scope, None, None, x_mission_id=outside)
    with pytest.raises(IdentityError, match="reserved"):
        narrow_identity(scope, "control-plane", None)


def test_priority_is_never_widened_and_control_never_granted(store):
    normal = _scope(store, kind="mission", scope_id="launch")
    bulk = _scope(store, name="batch", kind="mission", scope_id="launch", priority_ceiling="bulk")
    with pytest.raises(IdentityError, match="'control' is above"):
        narrow_identity(normal, None, "control")
    with pytest.raises(IdentityError, match="'normal' is above this identity's ceiling 'bulk'"):
        narrow_identity(bulk, None, "normal")
    assert narrow_identity(bulk, None, None).priority == "bulk"


@pytest.mark.parametrize(("body", "said"), [
    ("[]", "a JSON object with a `keys` array belongs there, and it holds a JSON array"),  # was "list indices must
    ("{}", "a JSON object with a `keys` array belongs there, and it holds an object without one"),  # be integers"
    ('{"keys": 5}', "and it holds an object without one"),
    ("{bad", "Expecting property name"),
])
def test_a_damaged_key_file_is_named_with_what_it_holds_and_the_fix(tmp_path, body, said):
    path = tmp_path / "api_keys.json"
    path.write_text(body)
    with pytest.raises(SpecError, match="it is not a valid key file") as refused:
        ApiKeyStore(path).list()
    assert said in str(refused.value) and "delete it and create new keys" in str(refused.value)
