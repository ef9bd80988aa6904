"""The budget book's methods on a BookKeeper in this process, for router-core tests."""

from serving._bookkeeper import BookKeeper


class InProcessBook:
    """The budget book's methods on its BookKeeper, awaitable like actor calls, with the time passed in."""

    def __init__(self, store=None):
        self.store, self.charges, self.now_s = store, 0, 0.0
        self.restart()

    def restart(self):
        """A new book process: it has only what the store holds."""
        self.keeper = BookKeeper(store=self.store)
        self.ledger = self.keeper.budgets

    async def load(self, mission_id):
        return self.keeper.load(mission_id)

    async def put(self, mission_id, states):
        self.keeper.put(mission_id, states)

    def charge(self, mission_id, agent_id, model, totals):
        self.charges += 1
        self.keeper.charge(mission_id, agent_id, model, totals)

    def set_default_caps(self, max_tokens, max_usd):
        self.keeper.set_default_caps(max_tokens, max_usd)

    async def set_budget(self, mission_id, agent_id, *, max_tokens, max_usd):
        self.keeper.set_budget(mission_id, agent_id, max_tokens=max_tokens, max_usd=max_usd)

    async def reserve(self, mission_id, agent_id, **size):
        return self.keeper.reserve(mission_id, agent_id, now_s=self.now_s, **size)

    def settle(self, reservation, **usage):
        self.keeper.settle(reservation, **usage)

    def record(self, mission_id, agent_id, model, totals, settles=None):
        self.keeper.record(mission_id, agent_id, model, totals, settles=settles)

    async def usage(self, mission_id):
        return self.keeper.usage.snapshot(mission_id)
