"""A memory subscriber for tests: keeps what the memory actor pushes to it."""

import ray


@ray.remote(num_cpus=0)
class Inbox:
    def __init__(self):
        self.events = []

    def on_memory_event(self, event):
        self.events.append(event)

    def received(self):
        return self.events
