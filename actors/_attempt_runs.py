"""The attempts an agent runs, by attempt key, so that the supervisor can stop one by its key (`AgentActor`'s
`cancel_attempts` and `drop_attempts`) rather than with `ray.cancel`: Ray reports a task it cancelled as cancelled
whatever the task then returned or raised, and an attempt that had just ended would lose what its outcome carries."""

from __future__ import annotations

import asyncio


class AttemptRuns:
    def __init__(self) -> None:
        self._runs: dict[str, asyncio.Task] = {}
        self._cancelled: set[str] = set()  # cancelled before their run began here (an agent serves one mission)

    def begin(self, key: str, run: asyncio.Task) -> None:
        """`run` (the asyncio task of the agent's `run` call) runs attempt `key`; raises CancelledError when that
        attempt was cancelled before its call began here."""
        if key in self._cancelled:
            self._cancelled.remove(key)
            raise asyncio.CancelledError
        self._runs[key] = run

    def end(self, key: str, run: asyncio.Task) -> None:
        if self._runs.get(key) is run:
            del self._runs[key]

    def cancel(self, keys: list[str]) -> None:
        """Cancel the runs of these attempts; one not begun yet will not run."""
        self._cancelled.update(set(keys) - self._cancel_runs(keys).keys())

    def drop(self, keys: list[str]) -> dict[str, asyncio.Task]:
        """Cancel the runs of these attempts, which a restarted supervisor sends again under the same keys (so they
        may begin again); returns the runs it cancelled."""
        self._cancelled.difference_update(keys)
        return self._cancel_runs(keys)

    def _cancel_runs(self, keys: list[str]) -> dict[str, asyncio.Task]:
        runs = {key: self._runs[key] for key in keys if key in self._runs}
        for run in runs.values():
            run.cancel()
        return runs
