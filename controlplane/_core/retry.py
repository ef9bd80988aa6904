"""Retries that follow the cause. Pure: the time is passed in.

The error class's `retryable` (controlplane.errors.is_retryable) is the one switch. Errors from outside the tree
(a user's Python code, Ray's RayActorError for a dead agent) carry no `retryable` and are retried.
A caller unwraps Ray's RayTaskError (`controlplane._ray_errors.cause_of`) before asking.

- `BackpressureError`: wait at least its `retry_after_s`.
- `OutputTruncated` (structured output cut off by max_tokens into invalid JSON): retry at once with
  twice the room, up to `max_tokens_cap`; at the cap, a repair turn instead of the same call.
- anything else retryable: exponential backoff, `backoff_s * 2**(n-1)` capped at `backoff_max_s`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controlplane._core.conflicts import backoff_s
from controlplane.errors import OutputTruncated, is_retryable


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How often and how patiently one task is retried."""

    retries: int
    """Extra attempts after the first failure (the task spec's `retries`)."""
    backoff_s: float
    """Wait before the first retry; doubles each time (policies.retry_backoff_s)."""
    backoff_max_s: float
    """Upper bound of the wait (policies.retry_backoff_max_s)."""
    max_tokens_cap: int = 4096
    """The most output tokens a retry of a truncated structured output may ask for."""


@dataclass(frozen=True, kw_only=True)
class Retry:
    """Try again at `at_s`, with `changes` to the next attempt's call (e.g. {"max_tokens": 512})."""

    at_s: float
    """When the next attempt may start."""
    reason: str
    """Why this wait and these changes, in words."""
    changes: dict[str, Any] = field(default_factory=dict)
    """Overrides for the next attempt: `max_tokens`, `repair_turn`."""


@dataclass(frozen=True, kw_only=True)
class GiveUp:
    """Do not retry (the fallback agent or the failure policy takes over)."""

    reason: str
    """Why not, in words."""


def retry_decision(error: BaseException, attempt: int, policy: RetryPolicy, now_s: float) -> Retry | GiveUp:
    """What to do after failed attempt number `attempt` (counted from 1 since the task's last fallback)."""
    name = type(error).__name__
    if not is_retryable(error):
        return GiveUp(reason=f"{name} is not retryable: trying again cannot succeed")
    if attempt > policy.retries:
        return GiveUp(reason=f"retries used up ({policy.retries} of {policy.retries}) after {name}")
    if isinstance(error, OutputTruncated):
        return _more_room(error, policy, now_s)
    wait_s = backoff_s(attempt, base_s=policy.backoff_s, max_s=policy.backoff_max_s)
    retry_after_s = getattr(error, "retry_after_s", None)
    if isinstance(retry_after_s, (int, float)) and retry_after_s > wait_s:
        return Retry(at_s=now_s + retry_after_s, reason=f"{name}: waiting the {retry_after_s:g} s it asked for")
    return Retry(at_s=now_s + wait_s, reason=f"{name}: backoff {wait_s:g} s before attempt {attempt + 1}")


def _more_room(error: OutputTruncated, policy: RetryPolicy, now_s: float) -> Retry:
    if error.max_tokens < policy.max_tokens_cap:
        room = min(2 * error.max_tokens, policy.max_tokens_cap)
        return Retry(at_s=now_s, changes={"max_tokens": room},
                     reason=f"output cut off at max_tokens={error.max_tokens}; retrying with max_tokens={room}")
    return Retry(at_s=now_s, changes={"max_tokens": policy.max_tokens_cap, "repair_turn": True},
                 reason=f"output cut off at the cap max_tokens={policy.max_tokens_cap}; asking the model to repair "
                        "its JSON in a second turn")
