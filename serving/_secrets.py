"""The cluster root secret: a 32-byte file, mode 0600, created once and atomically.

The router and each mission's memory actor read it to verify capability tokens; the CLI derives each
mission's key from it for the supervisor. Every process that verifies tokens must see the same file:
on a multi-node cluster point CONTROLPLANE_ROOT_SECRET_FILE at a path every node mounts.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from controlplane.errors import SetupError

ROOT_SECRET_ENV = "CONTROLPLANE_ROOT_SECRET_FILE"
API_KEYS_ENV = "CONTROLPLANE_API_KEYS_FILE"
DEFAULT_ROOT_SECRET_PATH = Path("~/.controlplane/root_secret")
ROOT_SECRET_BYTES = 32


def root_secret_path(path: str | Path | None = None) -> Path:
    """`path` if given, else $CONTROLPLANE_ROOT_SECRET_FILE, else ~/.controlplane/root_secret."""
    chosen = path if path is not None else os.environ.get(ROOT_SECRET_ENV) or DEFAULT_ROOT_SECRET_PATH
    return Path(chosen).expanduser()


def secret_file_env() -> dict[str, str]:
    """This process's choice of root secret and API key files, for the runtime_env of the actors that verify
    credentials (router replicas, memory actors). Paths only: a secret itself never travels through Ray."""
    return {name: os.environ[name] for name in (ROOT_SECRET_ENV, API_KEYS_ENV) if os.environ.get(name)}


def load_or_create_root_secret(path: str | Path | None = None) -> bytes:
    """The root secret at `root_secret_path(path)`, made on first use. Concurrent first uses agree on one."""
    target = root_secret_path(path)
    if not target.exists():
        _create(target)
    return _read(target)


def _create(target: Path) -> None:
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_hex(ROOT_SECRET_BYTES) + "\n")
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temp, target)  # atomic, and never replaces a secret another process made first
        except FileExistsError:
            pass
    finally:
        temp.unlink(missing_ok=True)


def _read(target: Path) -> bytes:
    mode = target.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise SetupError(what=f"the root secret {target} is readable by others (mode {stat.S_IMODE(mode):o})",
                         fix=f"chmod 600 {target}")
    try:
        secret = bytes.fromhex(target.read_text().strip())
    except ValueError:
        secret = b""
    if len(secret) < ROOT_SECRET_BYTES:
        raise SetupError(what=f"the root secret {target} is not {ROOT_SECRET_BYTES} bytes of hex",
                         fix=f"delete {target} to have a new one made (every issued token becomes invalid)")
    return secret
