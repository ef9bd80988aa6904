"""A Serve request router for replica deployments: prefix affinity, then power of two.

It reads the `affinity_key` keyword of `run_batch` calls and leaves the choice to
`serving._affinity.choose`, fed with Serve's cached queue lengths of the replicas. A call with a
`replica_id` keyword (`cancel_calls`) goes to that replica.
"""

from __future__ import annotations

import random

from ray.serve._private.request_router.request_router import FIFOMixin, RequestRouter

from serving._affinity import choose


class AffinityRequestRouter(FIFOMixin, RequestRouter):
    def initialize_state(self, busy_at: int = 8, **kwargs) -> None:
        self._busy_at = busy_at
        self._rng = random.Random()

    async def choose_replicas(self, candidate_replicas, pending_request=None):
        if not candidate_replicas:
            return []
        kwargs = pending_request.kwargs if pending_request is not None else {}
        by_id = {replica.replica_id.unique_id: replica for replica in candidate_replicas}
        if kwargs.get("replica_id") in by_id:
            return [[by_id[kwargs["replica_id"]]]]
        key = kwargs.get("affinity_key")
        loads = {rid: self.replica_queue_len_cache.get(replica.replica_id) or 0 for rid, replica in by_id.items()}
        chosen = choose(key, sorted(by_id), loads, busy_at=self._busy_at, rng=self._rng)
        return [[by_id[chosen]]]
