"""Capability tokens: identities that cannot be forged. Pure logic, time passed in.

Keys form a two-level hierarchy:

    cluster root secret (router and memory actor hold it)
      └── mission key = HMAC-SHA256(root, mission id)   (the mission's supervisor holds only this)
            └── token = base64url(claims JSON) "." base64url(HMAC-SHA256(mission key, first part))

So whoever holds the root secret verifies any mission's tokens, and a supervisor can mint tokens for its
own mission only. `expires_at_s` is wall-clock time (`time.time()`), since tokens cross processes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from controlplane.config.mission import RESERVED_AGENT_NAMES
from controlplane.errors import IdentityError, ScopeDenied

Role = Literal["agent", "supervisor"]
Priority = Literal["control", "normal", "bulk"]


PRIORITY_ORDER: tuple[Priority, ...] = ("control", "normal", "bulk")
"""Highest first."""

_KEY_CONTEXT = b"controlplane mission key v1\x00"
_TOKEN_VERSION = 1
MAX_TOKEN_CHARS = 16_384


@dataclass(frozen=True, kw_only=True)
class Claims:
    """What a verified token says about its bearer."""

    mission_id: str
    """The mission the bearer belongs to; its key signed the token."""
    agent_id: str
    """The bearer's agent name (or `supervisor`, `planner`, `control-plane`)."""
    role: Role
    """`supervisor` may grant, and may ask for `control` priority; `agent` may do neither."""
    grants: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Capabilities by kind, e.g. {"read": ("findings",), "write": ("writer",), "tools": ("search",)}."""
    priority: Priority = "normal"
    """The highest priority the bearer may ask for."""
    expires_at_s: float
    """Wall-clock second after which the token is refused."""


def mission_key(root_secret: bytes, mission_id: str) -> bytes:
    """The mission's signing key, derived from the cluster root secret."""
    if len(root_secret) < 16:
        raise IdentityError(why=f"the root secret has {len(root_secret)} bytes, too few to sign with",
                            fix="use load_or_create_root_secret(), which makes a 32-byte secret")
    return hmac.new(root_secret, _KEY_CONTEXT + mission_id.encode(), hashlib.sha256).digest()


def mint_token(mission_key: bytes, *, mission_id: str, agent_id: str, grants: dict[str, Any] | None = None,
               priority: Priority = "normal", expires_at_s: float, role: Role = "agent") -> str:
    """A signed capability token. Only a supervisor token may carry `control` priority."""
    if role not in get_args(Role):
        raise IdentityError(why=f"role {role!r} is not one of {get_args(Role)}",
                            fix="mint with role agent or supervisor")
    if priority not in PRIORITY_ORDER:
        raise IdentityError(why=f"priority {priority!r} is not one of {PRIORITY_ORDER}", fix="use normal or bulk")
    if priority == "control" and role != "supervisor":
        raise IdentityError(why=f"agent {agent_id!r} asks for priority control, which only supervisor tokens carry",
                            fix="mint agent tokens with priority normal or bulk")
    claims = {"v": _TOKEN_VERSION, "m": mission_id, "a": agent_id, "r": role, "p": priority,
              "e": expires_at_s, "g": {kind: sorted(names) for kind, names in (grants or {}).items()}}
    payload = _b64encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    return f"{payload}.{_b64encode(_sign(mission_key, payload))}"


def verify_token(root_secret: bytes, token: str, *, now_s: float) -> Claims:
    """The token's claims, or IdentityError when it is malformed, forged or expired."""
    payload, signature = _split(token)
    raw = _decode_claims(payload)
    mission_id = raw.get("m")
    if not isinstance(mission_id, str):
        raise _malformed("its claims name no mission")
    return _verified(mission_key(root_secret, mission_id), payload, signature, raw, now_s)


class TokenVerifier:
    """`verify_token` for a service that sees each token many times (a task's token comes with each of its
    calls): a token whose signature checked out is not decoded and signed again, but its expiry is checked on
    every call. Remembers at most `max_tokens` tokens."""

    def __init__(self, root_secret: bytes, *, max_tokens: int = 4_096) -> None:
        self._root_secret = root_secret
        self._max_tokens = max_tokens
        self._known: dict[str, Claims] = {}

    def verify(self, token: str, *, now_s: float) -> Claims:
        claims = self._known.get(token)
        if claims is not None:
            _require_unexpired(claims, now_s)
            return claims
        claims = verify_token(self._root_secret, token, now_s=now_s)
        if len(self._known) >= self._max_tokens:
            self._known.clear()
        self._known[token] = claims
        return claims


def _verified(key: bytes, payload: str, signature: bytes, raw: dict[str, Any], now_s: float) -> Claims:
    if not hmac.compare_digest(_sign(key, payload), signature):
        raise IdentityError(why="the token's signature does not match its claims (forged, edited, or signed "
                                "for another mission)", fix="use the token the mission's supervisor issued, unchanged")
    claims = _claims_of(raw)
    _require_unexpired(claims, now_s)
    return claims


def _require_unexpired(claims: Claims, now_s: float) -> None:
    if now_s >= claims.expires_at_s:
        raise IdentityError(why=f"the token of agent {claims.agent_id!r} in mission {claims.mission_id!r} expired "
                                f"at {claims.expires_at_s:.0f} (now {now_s:.0f})",
                            fix="ask the supervisor for a fresh token (tokens are re-issued with each task)")


def require_supervisor(claims: Claims, *, action: str) -> None:
    """Refuse `action` (e.g. `memory.grant`) unless the claims are a supervisor's."""
    if claims.role != "supervisor":
        raise ScopeDenied(why=f"{action} needs the supervisor's token; agent {claims.agent_id!r} of mission "
                                f"{claims.mission_id!r} holds an agent token",
                            fix=f"let the mission's supervisor call {action}")


def require_mission(claims: Claims, mission_id: str) -> None:
    """Refuse claims of another mission (e.g. at a mission's own memory actor)."""
    if claims.mission_id != mission_id:
        raise ScopeDenied(why=f"the token belongs to mission {claims.mission_id!r}, not {mission_id!r}",
                            fix="call the services of the bearer's own mission")


def narrow_priority(ceiling: Priority, requested: Priority | None) -> Priority:
    """`requested`, if it is no higher than `ceiling`; the ceiling's default (normal or lower) when None."""
    if requested is None:
        return PRIORITY_ORDER[max(PRIORITY_ORDER.index(ceiling), PRIORITY_ORDER.index("normal"))]
    if requested not in PRIORITY_ORDER:
        raise IdentityError(why=f"priority {requested!r} is not one of {PRIORITY_ORDER}", fix="use normal or bulk")
    if PRIORITY_ORDER.index(requested) < PRIORITY_ORDER.index(ceiling):
        raise ScopeDenied(why=f"priority {requested!r} is above this identity's ceiling {ceiling!r}",
                            fix=f"ask for {ceiling!r} or lower")
    return requested


class MissionTokens:
    """Mints one mission's tokens with its mission key. Control identities (the supervisor, the planner, the
    memory judge) are the reserved names and carry the supervisor role; agents never do."""

    def __init__(self, key: bytes, mission_id: str) -> None:
        self._key = key
        self.mission_id = mission_id

    def control(self, agent_id: str = "supervisor", *, now_s: float, ttl_s: float) -> str:
        """A supervisor-role token that may ask for `control` priority, set budgets and grant memory."""
        if agent_id not in RESERVED_AGENT_NAMES:
            raise IdentityError(why=f"{agent_id!r} is not a control-plane identity {RESERVED_AGENT_NAMES}",
                                fix="mint agents' tokens with MissionTokens.agent")
        return mint_token(self._key, mission_id=self.mission_id, agent_id=agent_id, role="supervisor",
                          priority="control", expires_at_s=_expiry(now_s, ttl_s))

    def agent(self, agent_id: str, *, now_s: float, ttl_s: float, read: Sequence[str] = (),
              write: Sequence[str] = (), tools: Sequence[str] = (), priority: Priority = "normal") -> str:
        """An agent's token: its memory namespaces and tools as grants, at most `normal` priority."""
        if agent_id in RESERVED_AGENT_NAMES:
            raise IdentityError(why=f"agent name {agent_id!r} is reserved for the control plane",
                                fix="give the agent another name")
        grants = {"read": list(read), "write": list(write), "tools": list(tools)}
        return mint_token(self._key, mission_id=self.mission_id, agent_id=agent_id, grants=grants,
                          priority=priority, expires_at_s=_expiry(now_s, ttl_s))


def _expiry(now_s: float, ttl_s: float) -> float:
    if ttl_s <= 0:
        raise IdentityError(why=f"ttl_s={ttl_s:g} leaves the token expired at birth", fix="give a positive ttl_s")
    return now_s + ttl_s


def _sign(key: bytes, payload: str) -> bytes:
    return hmac.new(key, payload.encode(), hashlib.sha256).digest()


def _split(token: str) -> tuple[str, bytes]:
    if not isinstance(token, str) or token.count(".") != 1:
        raise _malformed("a token is two base64url parts joined by one '.'")
    if len(token) > MAX_TOKEN_CHARS:
        raise _malformed(f"it has {len(token)} characters, more than {MAX_TOKEN_CHARS}")
    payload, signature = token.split(".")
    try:
        return payload, base64.urlsafe_b64decode(_padded(signature))
    except (binascii.Error, ValueError):
        raise _malformed("its signature is not base64url") from None


def _decode_claims(payload: str) -> dict[str, Any]:
    try:
        claims = json.loads(base64.urlsafe_b64decode(_padded(payload)))
    except (binascii.Error, ValueError):
        raise _malformed("its claims are not base64url JSON") from None
    if not isinstance(claims, dict):
        raise _malformed("its claims are not a JSON object")
    return claims


def _claims_of(raw: dict[str, Any]) -> Claims:
    """Claims from a payload whose signature was already checked."""
    if raw.get("v") != _TOKEN_VERSION:
        raise _malformed(f"token version {raw.get('v')!r} is not {_TOKEN_VERSION}")
    try:
        return Claims(mission_id=raw["m"], agent_id=raw["a"], role=raw["r"], priority=raw["p"],
                      expires_at_s=float(raw["e"]), grants={kind: tuple(names) for kind, names in raw["g"].items()})
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _malformed(f"its claims lack or mistype {exc}") from None


def _malformed(why: str) -> IdentityError:
    return IdentityError(why=f"malformed token: {why}", fix="pass the token exactly as the supervisor issued it")


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _padded(text: str) -> str:
    return text + "=" * (-len(text) % 4)
