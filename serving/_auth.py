"""Who makes a router call, from its credentials only: a capability token (agents, handle or HTTP API) or an
API key (people and other frameworks, HTTP API). Headers narrow inside what the credential allows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

from controlplane._core.identity import Claims, narrow_priority, require_supervisor, verify_token
from controlplane.errors import IdentityError, ScopeDenied
from serving._keys import KEY_PREFIX, ApiKeyStore, KeyScope, narrow_identity
from serving._types import Identity, Priority


def identity_from_token(root_secret: bytes, token: str | None, requested_priority: Priority | None, *,
                        now_s: float) -> Identity:
    """The token's mission and agent, at the requested priority if the token allows it."""
    if not token:
        raise IdentityError(why="the call carries no capability token",
                            fix="pass the token the supervisor gave the agent (ChatRequest.token)")
    claims = verify_token(root_secret, token, now_s=now_s)
    return Identity(mission_id=claims.mission_id, agent_id=claims.agent_id,
                    priority=narrow_priority(claims.priority, requested_priority))


def identity_from_headers(headers: Mapping[str, str | None], *, root_secret: bytes, keys: ApiKeyStore,
                          allow_anonymous: bool, now_s: float) -> tuple[Identity, KeyScope | None]:
    """The identity of an HTTP call, and its API key's scope (None for a token or anonymous call).

    `Authorization: Bearer cp-...` is an API key; any other bearer value is a capability token. Priority
    `control` is never granted over HTTP, whatever the credential."""
    requested_priority = cast("Priority | None", headers.get("x-priority"))
    if requested_priority == "control":
        raise ScopeDenied(why="priority 'control' is never granted over the HTTP API (it is the supervisor's, "
                              "through the handle API)", fix="ask for normal or bulk")
    bearer = _bearer(headers.get("authorization"))
    if bearer is None:
        if allow_anonymous:
            return Identity(priority=narrow_priority("normal", requested_priority)), None
        raise IdentityError(why="the request has no `Authorization: Bearer <key>` header",
                            fix="create a key with `controlplane keys create` and send it as the API key")
    if not bearer.startswith(KEY_PREFIX):
        identity = identity_from_token(root_secret, bearer, requested_priority, now_s=now_s)
        _same(headers, "x-mission-id", identity.mission_id)
        _same(headers, "x-agent-id", identity.agent_id)
        return identity, None
    scope = keys.lookup(bearer, now_s=now_s)
    if scope is None:
        raise IdentityError(why="the API key is unknown, revoked or expired",
                            fix="check it with `controlplane keys list`, or create a new one")
    return narrow_identity(scope, headers.get("x-agent-id"), requested_priority,
                           x_mission_id=headers.get("x-mission-id")), scope


class Authenticator:
    """The router's door: every call's identity from its credentials, with one root secret and one key file."""

    def __init__(self, *, root_secret: bytes, keys: ApiKeyStore, allow_anonymous: bool = False) -> None:
        self._root = root_secret
        self._keys = keys
        self.allow_anonymous = allow_anonymous

    def for_handle(self, token: str | None, requested_priority: Priority | None, *, now_s: float) -> Identity:
        """A handle call's identity: its token's, or the anonymous one where the config allows it."""
        if not token and self.allow_anonymous:
            return Identity(priority=narrow_priority("normal", requested_priority))
        return identity_from_token(self._root, token, requested_priority, now_s=now_s)

    def for_http(self, headers: Mapping[str, str | None], *, now_s: float) -> tuple[Identity, KeyScope | None]:
        return identity_from_headers(headers, root_secret=self._root, keys=self._keys,
                                     allow_anonymous=self.allow_anonymous, now_s=now_s)

    def supervisor(self, token: str | None, *, action: str, now_s: float) -> Claims:
        """The claims of a supervisor's token, for actions only a mission's supervisor may take."""
        if not token:
            raise IdentityError(why=f"{action} carries no capability token", fix="pass the supervisor's token")
        claims = verify_token(self._root, token, now_s=now_s)
        require_supervisor(claims, action=action)
        return claims


def _same(headers: Mapping[str, str | None], name: str, value: str) -> None:
    if headers.get(name) not in (None, value):
        raise ScopeDenied(why=f"{name} {headers[name]!r} differs from the capability token's {value!r}",
                          fix=f"drop the {name} header; the token says who calls")


def _bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise IdentityError(why=f"the Authorization header uses scheme {scheme!r}, not a bearer credential",
                            fix="send `Authorization: Bearer <key>`")
    return value.strip()
