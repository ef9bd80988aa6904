"""The memory read channel without Ray: authentication, multiplexed calls, errors, and the reader's fall back
to Ray calls when the channel is off, unreachable or lost."""

import asyncio
import time

import pytest

from controlplane.errors import IdentityError, SpecError
from memory._channel import CONNECT_TIMEOUT_S, MemoryReader, ReadChannel, ReadServer

TOKEN = "a token of the mission"


class Method:
    """A stand-in for an actor handle's method: `.remote()` gives an awaitable, and calls are counted."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def remote(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


class StandInActor:
    """Serves `search` both ways, as the memory actor does; its Ray path answers ('ray', query)."""

    def __init__(self, *, channel: bool = True) -> None:
        self.channel_calls = 0
        self.server = ReadServer({"search": self._search_on_channel})
        self.endpoint: tuple | None = None
        self.search = Method(self._search_over_ray)
        self.read_endpoint = Method(self._read_endpoint)
        self._channel = channel

    async def _search_on_channel(self, query, *, token):
        self.channel_calls += 1
        return ("channel", query)

    async def _search_over_ray(self, query, *, token):
        return ("ray", query)

    async def _read_endpoint(self, *, token):
        if token != TOKEN:
            raise IdentityError(why="the token is malformed", fix="use the supervisor's")
        if not self._channel:
            return None
        self.endpoint = await self.server.start("127.0.0.1")
        return self.endpoint


class Clock:
    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 10))


def test_calls_are_multiplexed_on_one_connection_and_run_concurrently():
    async def scenario():
        released = asyncio.Event()

        async def wait_for_release():
            await released.wait()
            return "released"

        async def release():
            released.set()
            return "set"

        server = ReadServer({"wait": wait_for_release, "release": release})
        channel = await ReadChannel.open(*await server.start("127.0.0.1"))
        waiting = asyncio.ensure_future(channel.call("wait"))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        # The second call overtakes the first on the same connection; a serial channel would hang here.
        assert await channel.call("release") == "set"
        assert await waiting == "released"
        channel.close()
        server.close()

    run(scenario())


def test_a_handler_error_reaches_the_caller_with_its_type_and_fields():
    async def refuse(k):
        raise SpecError(where="memory.search: k", value=k, why="k must be at least 1", fix="pass k >= 1")

    async def scenario():
        server = ReadServer({"search": refuse})
        channel = await ReadChannel.open(*await server.start("127.0.0.1"))
        with pytest.raises(SpecError, match="memory.search: k: 0 is invalid: k must be at least 1"):
            await channel.call("search", 0)
        channel.close()
        server.close()

    run(scenario())


def test_only_the_served_read_methods_can_be_called():
    async def scenario():
        server = ReadServer({"search": lambda: asyncio.sleep(0, "hit")})
        channel = await ReadChannel.open(*await server.start("127.0.0.1"))
        with pytest.raises(AttributeError, match="'post' is not a read method"):
            await channel.call("post")
        assert await channel.call("search") == "hit"
        channel.close()
        server.close()

    run(scenario())


def test_a_connection_without_the_secret_is_refused_before_any_call_runs():
    calls = []

    async def search():
        calls.append(1)

    async def scenario():
        server = ReadServer({"search": search})
        host, port, secret = await server.start("127.0.0.1")
        channel = await ReadChannel.open(host, port, b"x" * len(secret))
        with pytest.raises(ConnectionError):
            await channel.call("search")
        assert channel.broken
        server.close()

    run(scenario())
    assert calls == []


def test_the_reader_uses_the_channel_once_open_and_asks_for_the_endpoint_once():
    actor = StandInActor()

    async def scenario():
        reader = MemoryReader(actor)
        results = await asyncio.gather(*(reader.search(f"q{i}", token=TOKEN) for i in range(5)))
        assert results == [("channel", f"q{i}") for i in range(5)]
        assert reader.over_channel
        reader.close()
        actor.server.close()

    run(scenario())
    assert (actor.channel_calls, actor.search.calls, actor.read_endpoint.calls) == (5, 0, 1)


def test_the_reader_uses_ray_calls_only_when_the_actor_turns_the_channel_off():
    actor = StandInActor(channel=False)

    async def scenario():
        reader = MemoryReader(actor)
        assert [await reader.search("q", token=TOKEN) for _ in range(3)] == [("ray", "q")] * 3
        assert not reader.over_channel

    run(scenario())
    assert (actor.search.calls, actor.read_endpoint.calls) == (3, 1)


def test_a_connection_lost_mid_call_sends_that_read_through_ray_and_the_next_reopens_the_channel():
    actor = StandInActor()

    async def dies_mid_call(query, *, token):
        if query != "lost":
            return ("channel", query)
        actor.server.close()  # the actor process exits while the call runs: its connections go with it
        actor.server = ReadServer({"search": dies_mid_call})  # the restarted actor's server
        await asyncio.Event().wait()

    actor.server = ReadServer({"search": dies_mid_call})

    async def scenario():
        reader = MemoryReader(actor)
        assert await reader.search("before", token=TOKEN) == ("channel", "before")
        assert await reader.search("lost", token=TOKEN) == ("ray", "lost")
        assert await reader.search("after", token=TOKEN) == ("channel", "after")
        reader.close()
        actor.server.close()

    run(scenario())
    assert actor.read_endpoint.calls == 2


def test_an_unreachable_channel_is_retried_only_after_the_pause():
    actor = StandInActor()
    clock = Clock()

    async def unreachable(*, token):
        return ("127.0.0.1", 1, b"s" * 32)  # nothing listens on port 1

    actor.read_endpoint = Method(unreachable)

    async def scenario():
        reader = MemoryReader(actor, retry_after_s=30, clock=clock)
        assert await reader.search("a", token=TOKEN) == ("ray", "a")
        clock.now_s = 29.0
        assert await reader.search("b", token=TOKEN) == ("ray", "b")
        assert actor.read_endpoint.calls == 1
        clock.now_s = 31.0
        assert await reader.search("c", token=TOKEN) == ("ray", "c")
        assert actor.read_endpoint.calls == 2

    run(scenario())


def test_reads_from_another_event_loop_go_through_ray():
    actor = StandInActor()

    async def scenario():
        reader = MemoryReader(actor)
        assert await reader.search("a", token=TOKEN) == ("channel", "a")

        async def from_another_loop():
            return await reader.search("b", token=TOKEN)

        assert await asyncio.to_thread(asyncio.run, from_another_loop()) == ("ray", "b")
        assert await reader.search("c", token=TOKEN) == ("channel", "c")
        reader.close()
        actor.server.close()

    run(scenario())


def test_a_read_without_a_token_the_actor_accepts_gets_no_channel_and_goes_through_ray():
    actor = StandInActor()

    async def scenario():
        reader = MemoryReader(actor)
        assert await reader.search("a", token="forged") == ("ray", "a")  # the Ray call checks it, as ever
        assert not reader.over_channel

    run(scenario())
    assert (actor.read_endpoint.calls, actor.channel_calls) == (1, 0)


def test_a_server_that_never_answers_is_given_up_on_after_the_connect_timeout():
    actor = StandInActor()
    clock = Clock()

    async def scenario():
        silent = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)  # accepts, sends no nonce

        async def endpoint(*, token):
            return ("127.0.0.1", silent.sockets[0].getsockname()[1], b"s" * 32)

        actor.read_endpoint = Method(endpoint)
        reader = MemoryReader(actor, clock=clock)
        started = time.monotonic()
        assert await reader.search("a", token=TOKEN) == ("ray", "a")
        assert time.monotonic() - started < CONNECT_TIMEOUT_S + 1
        silent.close()

    run(scenario())
