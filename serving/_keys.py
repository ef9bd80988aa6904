"""HTTP API keys: bearer keys that map to an identity scope (a mission or a team), with limits and a
priority ceiling. Only SHA-256 hashes of keys are stored; the clear key is shown once, at creation.

Headers may narrow the identity inside a key's scope, never widen it: `x-mission-id` picks a mission inside
a team's scope, `x-agent-id` an agent the key allows, `x-priority` a priority at or below the key's ceiling.
No key ever grants `control` priority.
"""

from __future__ import annotations

import builtins
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from controlplane._core.identity import RESERVED_AGENT_NAMES, narrow_priority
from controlplane._core.json_kind import json_kind
from controlplane.config.mission import NAME_PATTERN
from controlplane.errors import ScopeDenied, SpecError
from serving._secrets import API_KEYS_ENV
from serving._types import Identity, Priority

KEY_PREFIX = "cp-"
DEFAULT_API_KEYS_PATH = Path("~/.controlplane/api_keys.json")
_NAME = re.compile(NAME_PATTERN)


class KeyScope(BaseModel):
    """What a key lets its bearer be. Public: `keys list` shows it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(description="Short public id, used to revoke.")
    name: str = Field(description="Human name; the default agent id of calls made with the key.")
    kind: Literal["mission", "team"] = Field(description="mission: one mission id; team: the team's name and "
                                             "any mission id `<team>/<anything>`.")
    scope_id: str = Field(description="The mission id or the team name.")
    agents: tuple[str, ...] | None = Field(None, description="Agent ids the bearer may act as; None = any "
                                           "non-reserved agent id.")
    rpm: float | None = Field(None, gt=0, description="Requests per minute of the key; None = unlimited.")
    tpm: float | None = Field(None, gt=0, description="Tokens per minute of the key; None = unlimited.")
    priority_ceiling: Literal["normal", "bulk"] = Field("normal", description="Highest priority it may ask for.")
    expires_at_s: float | None = Field(None, description="Wall-clock expiry; None = never.")
    created_at_s: float = Field(description="Wall-clock creation time.")
    revoked_at_s: float | None = Field(None, description="Wall-clock revocation time; None = active.")

    @field_validator("name", "scope_id")
    @classmethod
    def _named(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} must match {_NAME.pattern}")
        return value

    def active(self, now_s: float) -> bool:
        return self.revoked_at_s is None and (self.expires_at_s is None or now_s < self.expires_at_s)


class _StoredKey(KeyScope):
    sha256: str = Field(description="Hex SHA-256 of the clear key.")


def hash_key(clear_key: str) -> str:
    return hashlib.sha256(clear_key.encode()).hexdigest()


def new_clear_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def match_key(records: Iterable[_StoredKey], clear_key: str, now_s: float) -> KeyScope | None:
    """The active record whose hash matches; every record is compared, in constant time each."""
    digest, found = hash_key(clear_key), None
    for record in records:
        if hmac.compare_digest(record.sha256, digest):
            found = record
    if found is None or not found.active(now_s):
        return None
    return KeyScope.model_validate(found.model_dump(exclude={"sha256"}))


def narrow_identity(scope: KeyScope, x_agent_id: str | None, requested_priority: Priority | None, *,
                    x_mission_id: str | None = None) -> Identity:
    """The identity of a call made with a key; headers may narrow it inside the scope, never widen it."""
    return Identity(mission_id=_mission_in(scope, x_mission_id), agent_id=_agent_in(scope, x_agent_id),
                    priority=narrow_priority(scope.priority_ceiling, requested_priority))


def _mission_in(scope: KeyScope, requested: str | None) -> str:
    if requested is None or requested == scope.scope_id:
        return scope.scope_id
    if scope.kind == "team" and requested.startswith(f"{scope.scope_id}/") and len(requested) > len(scope.scope_id) + 1:
        return requested
    allowed = f"{scope.scope_id!r} or {scope.scope_id}/<mission>" if scope.kind == "team" else repr(scope.scope_id)
    raise ScopeDenied(why=f"x-mission-id {requested!r} is outside API key {scope.name!r}, which covers {allowed}",
                        fix="drop the header, or use a key for that mission")


def _agent_in(scope: KeyScope, requested: str | None) -> str:
    if requested is None:
        return scope.agents[0] if scope.agents else scope.name
    if requested in RESERVED_AGENT_NAMES:
        raise ScopeDenied(why=f"x-agent-id {requested!r} is reserved for the control plane",
                            fix="use your own agent name")
    if scope.agents is not None and requested not in scope.agents:
        raise ScopeDenied(why=f"x-agent-id {requested!r} is outside API key {scope.name!r}, which allows "
                                f"{list(scope.agents)}", fix="use one of those agent ids, or a key that allows it")
    return requested


class ApiKeyStore:
    """The key file (JSON, mode 0600). Lookups re-read it only when it changed, so a revoke reaches a
    running router at once."""

    def __init__(self, path: str | Path | None = None) -> None:
        chosen = path if path is not None else os.environ.get(API_KEYS_ENV) or DEFAULT_API_KEYS_PATH
        self.path = Path(chosen).expanduser()
        self._cache: tuple[tuple[int, int, int], list[_StoredKey]] | None = None

    def create(self, name: str, *, kind: Literal["mission", "team"], scope_id: str, now_s: float,
               agents: list[str] | None = None, rpm: float | None = None, tpm: float | None = None,
               priority_ceiling: Literal["normal", "bulk"] = "normal",
               expires_at_s: float | None = None, replace: bool = False) -> tuple[str, KeyScope]:
        """A new key: the clear key (shown once, never stored) and its scope. An active key of the same name is
        refused, or with `replace` revoked in the same write."""
        clear_key = new_clear_key()
        for agent in agents or ():
            if agent in RESERVED_AGENT_NAMES:
                raise SpecError(where="keys create --agent", value=agent, why="it is reserved for the control plane",
                                fix="name your own agents")
        try:
            record = _StoredKey(id=secrets.token_hex(4), name=name, kind=kind, scope_id=scope_id,
                                agents=tuple(agents) if agents else None, rpm=rpm, tpm=tpm,
                                priority_ceiling=priority_ceiling, expires_at_s=expires_at_s, created_at_s=now_s,
                                sha256=hash_key(clear_key))
        except ValidationError as exc:
            raise SpecError.from_validation(exc, where="keys create: ",
                                            fix="see `controlplane keys create --help`") from None
        with self._locked() as records:
            same_name = [n for n, r in enumerate(records) if r.name == name and r.active(now_s)]
            if same_name and not replace:
                raise SpecError(where="keys create", value=name, why="an active key already has this name",
                                fix="pick another name, or revoke the old key first")
            for n in same_name:
                records[n] = records[n].model_copy(update={"revoked_at_s": now_s})
            records.append(record)
        return clear_key, _public(record)

    def list(self) -> list[KeyScope]:
        """Every key, revoked and expired ones included, without hashes."""
        return [_public(record) for record in self._records()]

    def revoke(self, key_id: str, *, now_s: float) -> KeyScope:
        with self._locked() as records:
            for n, record in enumerate(records):
                if record.id == key_id:
                    if record.revoked_at_s is None:
                        records[n] = record = record.model_copy(update={"revoked_at_s": now_s})
                    return _public(record)
        raise SpecError(where="keys revoke", value=key_id, why="no key has this id",
                        fix="see the ids with `controlplane keys list`")

    def lookup(self, clear_key: str, *, now_s: float) -> KeyScope | None:
        """The scope of an active key; None for an unknown, revoked or expired one."""
        return match_key(self._records(), clear_key, now_s)

    def _records(self) -> builtins.list[_StoredKey]:
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return []
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)  # each write replaces the file: a new inode
        if self._cache is None or self._cache[0] != stamp:
            self._cache = (stamp, self._parse(self.path.read_text()))
        return self._cache[1]

    def _parse(self, text: str) -> builtins.list[_StoredKey]:
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or not isinstance(data.get("keys"), builtins.list):
                found = f"a JSON {json_kind(data)}" if not isinstance(data, dict) else "an object without one"
                raise ValueError(f"a JSON object with a `keys` array belongs there, and it holds {found}")
            return [_StoredKey.model_validate(raw) for raw in data["keys"]]
        except ValueError as exc:
            raise SpecError(where=str(self.path), value="<key file>", why=f"it is not a valid key file ({exc})",
                            fix="restore it from a backup, or delete it and create new keys") from None

    @contextmanager
    def _locked(self) -> Iterator[builtins.list[_StoredKey]]:
        """The records, for a read-modify-write under an exclusive lock; written back atomically."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            records = self._parse(self.path.read_text()) if self.path.exists() else []
            yield records
            self._write(records)

    def _write(self, records: builtins.list[_StoredKey]) -> None:
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump({"version": 1, "keys": [r.model_dump(mode="json") for r in records]}, file, indent=1)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, self.path)


def revoke_if_seen(keys_file: str, key_id: str, *clear_copies: str, now_s: float) -> bool:
    """Revoke a key in the key file at that path when this node sees the file, and delete the files that hold the
    key in clear; False when it does not see the key file (it is made nowhere else)."""
    if not Path(keys_file).is_file():
        return False
    ApiKeyStore(keys_file).revoke(key_id, now_s=now_s)
    for copy in clear_copies:
        Path(copy).unlink(missing_ok=True)
    return True


def _public(record: _StoredKey) -> KeyScope:
    return KeyScope.model_validate(record.model_dump(exclude={"sha256"}))
