"""The router's batching decisions, without Serve: which waiting calls travel together, and which
replica to tell when a call of a batch is cancelled. Pure logic."""

from __future__ import annotations

from collections.abc import Hashable, Sequence


def split_batches(keys: Sequence[Hashable | None], max_size: int) -> list[list[int]]:
    """Indexes of waiting calls grouped into batches: one key per batch (each batch is routed by its key),
    at most `max_size` calls each, first come first served. Calls without a key (None) form their own batches."""
    groups: dict[Hashable | None, list[list[int]]] = {}
    for index, key in enumerate(keys):
        batches = groups.setdefault(key, [[]])
        if len(batches[-1]) >= max_size:
            batches.append([])
        batches[-1].append(index)
    return sorted((batch for batches in groups.values() for batch in batches), key=lambda batch: batch[0])


class SentBatch:
    """A batch sent to some replica. Cancelling one call must reach the replica that runs it, which is only
    known once the replica's first message arrives; cancels before that wait here."""

    def __init__(self, call_ids: Sequence[str]) -> None:
        self.call_ids = tuple(call_ids)
        self.replica: str | None = None
        """The replica that runs the batch, once known."""
        self._waiting: list[str] = []

    def cancel(self, call_id: str) -> str | None:
        """Cancel one call: the replica to tell now, or None while it is not known (`located` returns the call then)."""
        if call_id not in self.call_ids:
            raise ValueError(f"call {call_id!r} is not in this batch")
        if self.replica is None:
            self._waiting.append(call_id)
        return self.replica

    def located(self, replica: str) -> list[str]:
        """The batch runs on `replica`: the calls cancelled meanwhile, to tell it now."""
        self.replica = replica
        waiting, self._waiting = self._waiting, []
        return waiting
