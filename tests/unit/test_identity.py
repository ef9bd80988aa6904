"""Capability tokens: only the mission's key makes a token that verifies, and only until it expires."""

import base64
import json
import pickle

import pytest

from controlplane._core.identity import (
    RESERVED_AGENT_NAMES,
    Claims,
    TokenVerifier,
    mint_token,
    mission_key,
    narrow_priority,
    require_mission,
    require_supervisor,
    verify_token,
)
from controlplane.errors import IdentityError

ROOT = b"r" * 32
NOW = 1_000_000.0


def token_for(agent="writer", mission="m1", *, root=ROOT, role="agent", priority="normal", expires_at_s=NOW + 60,
              grants=None):
    return mint_token(mission_key(root, mission), mission_id=mission, agent_id=agent, role=role, priority=priority,
                      grants=grants if grants is not None else {"read": ["shared", "findings"], "write": ["findings"]},
                      expires_at_s=expires_at_s)


def test_a_minted_token_verifies_with_the_root_secret_and_names_its_bearer():
    claims = verify_token(ROOT, token_for(), now_s=NOW)
    assert claims == Claims(mission_id="m1", agent_id="writer", role="agent", priority="normal",
                            grants={"read": ("findings", "shared"), "write": ("findings",)}, expires_at_s=NOW + 60)
    assert pickle.loads(pickle.dumps(claims)) == claims  # claims cross actor boundaries


def test_a_token_forged_with_another_root_secret_is_refused():
    with pytest.raises(IdentityError, match="signature does not match") as info:
        verify_token(ROOT, token_for(root=b"x" * 32), now_s=NOW)
    assert "Fix:" in str(info.value) and not info.value.retryable


def _reclaim(token: str, **changes) -> str:
    payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    edited = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{edited}.{signature}"


@pytest.mark.parametrize("changes", [{"a": "supervisor"}, {"r": "supervisor"}, {"p": "control"},
                                     {"e": NOW + 10**9}, {"m": "m2"}, {"g": {"read": ["*"]}}],
                         ids=["agent", "role", "priority", "expiry", "mission", "grants"])
def test_tampered_claims_are_refused(changes):
    with pytest.raises(IdentityError, match="signature does not match"):
        verify_token(ROOT, _reclaim(token_for(), **changes), now_s=NOW)


def test_a_token_signed_with_another_missions_key_is_refused():
    other = mint_token(mission_key(ROOT, "m2"), mission_id="m1", agent_id="writer", expires_at_s=NOW + 60)
    with pytest.raises(IdentityError, match="signature"):
        verify_token(ROOT, other, now_s=NOW)


def test_an_expired_token_is_refused_and_says_when_it_expired():
    token = token_for(expires_at_s=NOW)
    with pytest.raises(IdentityError, match=f"expired at {NOW:.0f}"):
        verify_token(ROOT, token, now_s=NOW)
    assert verify_token(ROOT, token, now_s=NOW - 0.001).agent_id == "writer"


def test_a_remembered_token_is_still_refused_once_it_expires_and_forgeries_are_never_remembered():
    verifier = TokenVerifier(ROOT, max_tokens=2)
    token = token_for(expires_at_s=NOW + 10)
    assert verifier.verify(token, now_s=NOW) == verify_token(ROOT, token, now_s=NOW)
    assert verifier.verify(token, now_s=NOW + 9).agent_id == "writer"
    with pytest.raises(IdentityError, match=f"expired at {NOW + 10:.0f}"):
        verifier.verify(token, now_s=NOW + 10)
    forged = _reclaim(token_for(), r="supervisor")
    for _ in range(2):
        with pytest.raises(IdentityError, match="signature does not match"):
            verifier.verify(forged, now_s=NOW)
    for agent in ("a", "b", "c"):  # more tokens than it remembers: it forgets, and verifies them afresh
        assert verifier.verify(token_for(agent), now_s=NOW).agent_id == agent
    assert verifier.verify(token, now_s=NOW).agent_id == "writer"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "!!!.???", "e30.AAAA", f"{'x' * 10}.{'y' * 43}", None,
                                   "e" * 20_000 + ".x"])
def test_malformed_tokens_are_refused_as_malformed(token):
    with pytest.raises(IdentityError, match="malformed"):
        verify_token(ROOT, token, now_s=NOW)


def test_only_supervisor_tokens_carry_control_priority():
    with pytest.raises(IdentityError, match="only supervisor tokens"):
        token_for(priority="control")
    claims = verify_token(ROOT, token_for("supervisor", role="supervisor", priority="control"), now_s=NOW)
    assert (claims.role, claims.priority) == ("supervisor", "control")


def test_grant_requires_a_supervisor_token():
    agent = verify_token(ROOT, token_for(), now_s=NOW)
    with pytest.raises(IdentityError, match="memory.grant needs the supervisor's token"):
        require_supervisor(agent, action="memory.grant")
    require_supervisor(verify_token(ROOT, token_for("supervisor", role="supervisor"), now_s=NOW),
                       action="memory.grant")


def test_a_token_of_another_mission_is_refused_by_a_missions_service():
    claims = verify_token(ROOT, token_for(mission="m2"), now_s=NOW)
    with pytest.raises(IdentityError, match="belongs to mission 'm2', not 'm1'"):
        require_mission(claims, "m1")


def test_priority_narrows_never_widens():
    assert narrow_priority("normal", None) == "normal"
    assert narrow_priority("bulk", None) == "bulk"
    assert narrow_priority("control", None) == "normal"  # control only when asked for
    assert narrow_priority("normal", "bulk") == "bulk"
    assert narrow_priority("control", "control") == "control"
    with pytest.raises(IdentityError, match="above this identity's ceiling 'normal'"):
        narrow_priority("normal", "control")
    with pytest.raises(IdentityError, match="above"):
        narrow_priority("bulk", "normal")


def test_reserved_names_and_a_short_root_secret():
    assert RESERVED_AGENT_NAMES == ("supervisor", "planner", "control-plane", "memory-judge")
    with pytest.raises(IdentityError, match="too few"):
        mission_key(b"short", "m1")


def test_mission_tokens_give_control_only_to_reserved_names_and_grants_to_agents():
    from controlplane._core.identity import MissionTokens

    tokens = MissionTokens(mission_key(ROOT, "m1"), "m1")
    planner = verify_token(ROOT, tokens.control("planner", now_s=NOW, ttl_s=30), now_s=NOW)
    assert (planner.role, planner.priority, planner.agent_id, planner.expires_at_s) == ("supervisor", "control",
                                                                                        "planner", NOW + 30)
    writer = verify_token(ROOT, tokens.agent("writer", now_s=NOW, ttl_s=30, read=["shared"], write=["writer"],
                                             tools=["memory.post"]), now_s=NOW)
    assert (writer.role, writer.priority) == ("agent", "normal")
    assert writer.grants == {"read": ("shared",), "write": ("writer",), "tools": ("memory.post",)}
    with pytest.raises(IdentityError, match="reserved"):
        tokens.agent("supervisor", now_s=NOW, ttl_s=30)
    with pytest.raises(IdentityError, match="not a control-plane identity"):
        tokens.control("writer", now_s=NOW, ttl_s=30)
    with pytest.raises(IdentityError, match="expired at birth"):
        tokens.agent("writer", now_s=NOW, ttl_s=0)
    with pytest.raises(IdentityError, match="expired"):
        verify_token(ROOT, tokens.agent("writer", now_s=NOW, ttl_s=30), now_s=NOW + 30)
