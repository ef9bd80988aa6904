"""An app's detached actors, its limiter (`<app>:limiter`) and budget book (`<app>:budgets`), outlive the app and
every router replica, so the router replicas of a newer controlplane could find actors that run an older one's
code. Each reports the code it runs: `deploy` retires one that runs other code before it (re)deploys the app, when
no mission uses it, and a router replica that finds one refuses to start, with the fix.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from controlplane.errors import SetupError

logger = logging.getLogger(__name__)
LIMITER_NAMESPACE = "controlplane"
ANSWER_TIMEOUT_S = 30.0
"""How long to wait for a detached actor to say what code it runs (a new one starts its process first)."""
RETIRE_TIMEOUT_S = 30.0

_PACKAGES = ("controlplane", "serving")


@functools.cache
def code_version() -> str:
    """A digest of this installation's `controlplane` and `serving` sources, which the detached actors run."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(p for package in _PACKAGES for p in (root / package).rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def detached_names(app_name: str) -> list[str]:
    return [f"{app_name}:limiter", f"{app_name}:budgets"]


def runs_this_code(actor: Any) -> bool | None:
    """Whether `actor` runs this installation's code; None when it did not answer in time."""
    try:
        return ray.get(actor.code_version.remote(), timeout=ANSWER_TIMEOUT_S) == code_version()
    except AttributeError:  # started by a controlplane whose detached actors did not say what code they run
        return False
    except (GetTimeoutError, RayActorError):
        return None


def retire_stale(app_name: str) -> list[str]:
    """Kill the app's detached actors that run other code (or that do not answer), so that the next router replica
    starts them anew; the names of those killed. Only while no mission uses the app. A new budget book carries on
    from the records the old one saved."""
    retired = []
    for name in detached_names(app_name):
        try:
            actor = ray.get_actor(name, namespace=LIMITER_NAMESPACE)
        except ValueError:
            continue
        if runs_this_code(actor):
            continue
        ray.kill(actor, no_restart=True)
        _wait_gone(name)
        retired.append(name)
    if retired:
        logger.warning("replaced %s, which ran another controlplane version's code", ", ".join(retired))
    return retired


def check_runs_this_code(actor: Any, name: str) -> None:
    """SetupError when the app's detached actor `name` runs another controlplane version's code."""
    if runs_this_code(actor) is False:
        raise SetupError(what=f"the detached actor {name!r} (namespace {LIMITER_NAMESPACE!r}) was started by "
                              "another controlplane version: its code differs from this router replica's",
                         fix="deploy the app with controlplane (`controlplane run`, or `serving.deploy`), which "
                             "replaces it when no mission runs; or kill it when no mission runs: "
                             f"`ray.kill(ray.get_actor({name!r}, namespace={LIMITER_NAMESPACE!r}))`")


def _wait_gone(name: str) -> None:
    """Until the killed actor's name is free, so that the next replica creates a new one rather than finding it."""
    deadline = time.monotonic() + RETIRE_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            ray.get_actor(name, namespace=LIMITER_NAMESPACE)
        except ValueError:
            return
        time.sleep(0.05)
    raise SetupError(what=f"the detached actor {name!r} was killed but its name was not freed in "
                          f"{RETIRE_TIMEOUT_S:g} s", fix="try again; if it persists, restart Ray (`ray stop`)")
