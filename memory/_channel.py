"""A direct TCP channel for the memory actor's reads, beside its Ray calls.

A Ray actor call costs 1 to 3 ms of round trip on a 2-core node, more than the search it carries
(docs/benchmarks.md#memory-bench_memorypy). The actor serves its read methods on this channel too, in its own
event loop, so a search is still atomic with respect to writes. A caller gets the endpoint and its secret
through a Ray call that carries a token of the mission, proves it knows the secret with an HMAC of a nonce, then
sends pickled calls, as Ray itself does between its workers. Calls are multiplexed by id, so concurrent searches
on one connection run concurrently, as they do through Ray.

`MemoryReader` is what callers use: the channel while it works, the actor's Ray method whenever it does not
(the actor turned it off, cannot be reached, restarted mid-call). Reads are safe to repeat, so a call lost with
its connection goes again through Ray.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import logging
import os
import pickle
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

logger = logging.getLogger(__name__)

READ_METHODS = ("search", "search_vectors")
NONCE_BYTES = 32
CONNECT_TIMEOUT_S = 1.0
RETRY_CHANNEL_AFTER_S = 30.0
_LENGTH = struct.Struct("!Q")
_PROOF_BYTES = hashlib.sha256().digest_size


def proof(secret: bytes, nonce: bytes) -> bytes:
    return hmac.new(secret, nonce, hashlib.sha256).digest()


def frame(message: Any) -> bytes:
    payload = pickle.dumps(message, protocol=5)
    return _LENGTH.pack(len(payload)) + payload


class _Frames:
    """Splits a byte stream into length-prefixed frames; the first `preamble` bytes come out on their own."""

    def __init__(self, preamble: int) -> None:
        self._buffer = bytearray()
        self._preamble: int | None = preamble

    def feed(self, data: bytes) -> tuple[bytes | None, list[bytes]]:
        """(the preamble, once it is complete, else None; the frames completed by `data`)."""
        self._buffer += data
        preamble = None
        if self._preamble is not None:
            if len(self._buffer) < self._preamble:
                return None, []
            preamble = bytes(self._buffer[:self._preamble])
            del self._buffer[:self._preamble]
            self._preamble = None
        frames = []
        while len(self._buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(self._buffer)
            if len(self._buffer) < _LENGTH.size + size:
                break
            frames.append(bytes(self._buffer[_LENGTH.size:_LENGTH.size + size]))
            del self._buffer[:_LENGTH.size + size]
        return preamble, frames


class ReadServer:
    """Serves `handlers` (method name -> coroutine function) to authenticated connections, on the running loop."""

    def __init__(self, handlers: dict[str, Callable[..., Awaitable[Any]]]) -> None:
        self.handlers = handlers
        self.secret = os.urandom(32)
        self._server: asyncio.Server | None = None
        self.connections: set[_ServerConnection] = set()
        self.served = 0
        """Calls answered (with a result or an error) since the start."""

    async def start(self, host: str) -> tuple[str, int, bytes]:
        """(host, port, secret); idempotent."""
        if self._server is None:
            self._server = await asyncio.get_running_loop().create_server(
                lambda: _ServerConnection(self), host, 0)
        port = self._server.sockets[0].getsockname()[1]
        return host, port, self.secret

    def close(self) -> None:
        """Stop listening and drop every connection, as the actor's exit would."""
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.transport.abort()


class _ServerConnection(asyncio.Protocol):
    """One caller's connection: a nonce out, its proof in, then calls, each answered in its own task."""

    transport: asyncio.Transport

    def __init__(self, server: ReadServer) -> None:
        self._server = server
        self._frames = _Frames(preamble=_PROOF_BYTES)
        self._nonce = os.urandom(NONCE_BYTES)
        self._tasks: set[asyncio.Task] = set()
        self._proven = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._server.connections.add(self)
        self.transport.write(self._nonce)
        self._deadline = asyncio.get_running_loop().call_later(CONNECT_TIMEOUT_S, self._unproven)

    def connection_lost(self, exc: Exception | None) -> None:
        self._server.connections.discard(self)
        self._deadline.cancel()

    def data_received(self, data: bytes) -> None:
        answer, frames = self._frames.feed(data)
        if answer is not None:
            self._deadline.cancel()
            if not hmac.compare_digest(answer, proof(self._server.secret, self._nonce)):
                logger.warning("memory read channel: refused a connection from %s (wrong proof)",
                               self.transport.get_extra_info("peername"))
                self.transport.abort()
                return
            self._proven = True
        if not self._proven:
            return
        for payload in frames:
            task = asyncio.get_running_loop().create_task(self._answer(*pickle.loads(payload)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _unproven(self) -> None:
        if not self._proven:
            self.transport.abort()

    async def _answer(self, call_id: int, method: str, args: tuple, kwargs: dict) -> None:
        handler = self._server.handlers.get(method)
        try:
            if handler is None:
                raise AttributeError(f"memory read channel: {method!r} is not a read method; use {READ_METHODS}")
            reply = (call_id, True, await handler(*args, **kwargs))
        except Exception as exc:  # noqa: BLE001 - the caller gets the error, as from a Ray call
            reply = (call_id, False, exc)
        try:
            data = frame(reply)
        except Exception as exc:  # noqa: BLE001 - an error that does not pickle still reaches the caller
            data = frame((call_id, False, RuntimeError(repr(exc))))
        self._server.served += 1
        if not self.transport.is_closing():
            self.transport.write(data)


class ReadChannel(asyncio.Protocol):
    """One authenticated connection to a `ReadServer`; `call` raises ConnectionError once it is broken."""

    transport: asyncio.Transport

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._frames = _Frames(preamble=NONCE_BYTES)
        self._ids = itertools.count()
        self._pending: dict[int, asyncio.Future] = {}
        self._lost: Exception | None = None
        self._proof_sent = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(cls, host: str, port: int, secret: bytes, *, timeout_s: float = CONNECT_TIMEOUT_S) -> ReadChannel:
        transport, channel = await asyncio.wait_for(
            asyncio.get_running_loop().create_connection(lambda: cls(secret), host, port), timeout_s)
        try:
            await asyncio.wait_for(channel._proof_sent, timeout_s)
        except BaseException:
            transport.abort()
            raise
        return channel

    @property
    def broken(self) -> bool:
        return self._lost is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        nonce, frames = self._frames.feed(data)
        if nonce is not None:
            self.transport.write(proof(self._secret, nonce))
            self._proof_sent.set_result(None)
        for payload in frames:
            call_id, ok, value = pickle.loads(payload)
            reply = self._pending.get(call_id)
            if reply is not None and not reply.done():
                reply.set_result((ok, value))

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = ConnectionError(f"memory read channel lost: {exc or 'closed'!r}")
        if not self._proof_sent.done():
            self._proof_sent.set_exception(self._lost)
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(self._lost)

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._lost is not None:
            raise self._lost
        call_id = next(self._ids)
        reply = self._pending[call_id] = asyncio.get_running_loop().create_future()
        try:
            self.transport.write(frame((call_id, method, args, kwargs)))
            ok, value = await reply
        finally:
            self._pending.pop(call_id, None)
        if ok:
            return value
        raise value

    def close(self) -> None:
        self.transport.close()


class MemoryReader:
    """The memory actor's reads (`search`, `search_vectors`) for one caller: over the read channel while it
    works, else as Ray calls. After the channel fails to open, Ray calls only for `retry_after_s`. The channel
    belongs to the event loop of the first read; reads from any other loop go as Ray calls."""

    def __init__(self, actor: Any, *, retry_after_s: float = RETRY_CHANNEL_AFTER_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._actor = actor
        self._retry_after_s = retry_after_s
        self._clock = clock
        self._channel: ReadChannel | None = None
        self._opening: asyncio.Task | None = None
        self._closed_until = float("-inf")
        self._loop: asyncio.AbstractEventLoop | None = None

    async def search(self, *args: Any, **kwargs: Any) -> Any:
        return await self._read("search", args, kwargs)

    async def search_vectors(self, *args: Any, **kwargs: Any) -> Any:
        return await self._read("search_vectors", args, kwargs)

    @property
    def over_channel(self) -> bool:
        """Whether the next read goes over the channel (an open, unbroken connection)."""
        return self._channel is not None and not self._channel.broken

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    async def _read(self, method: str, args: tuple, kwargs: dict) -> Any:
        loop = asyncio.get_running_loop()
        self._loop = self._loop or loop
        token = kwargs.get("token")
        channel = await self._usable_channel(token) if loop is self._loop and isinstance(token, str) else None
        if channel is not None:
            try:
                return await channel.call(method, *args, **kwargs)
            except ConnectionError as exc:
                logger.info("memory read channel lost (%r); this %s goes through Ray", exc, method)
                self.close()
        return await getattr(self._actor, method).remote(*args, **kwargs)

    async def _usable_channel(self, token: str) -> ReadChannel | None:
        if self.over_channel:
            return self._channel
        if self._clock() < self._closed_until:
            return None
        if self._opening is None:  # concurrent first reads share one connection attempt
            self._opening = asyncio.get_running_loop().create_task(self._open(token))
        opening = self._opening
        try:
            self._channel = await asyncio.shield(opening)
        finally:
            if self._opening is opening and opening.done():
                self._opening = None
        return self._channel

    async def _open(self, token: str) -> ReadChannel | None:
        try:
            endpoint = await self._actor.read_endpoint.remote(token=token)
            if endpoint is None:
                self._closed_until = float("inf")  # the actor's config turned the channel off
                return None
            return await ReadChannel.open(*endpoint)
        except Exception as exc:  # noqa: BLE001 - whatever stops the channel, the Ray call still works or says why
            logger.warning("memory read channel: cannot open (%r); reads go through Ray for %.0f s",
                           exc, self._retry_after_s)
            self._closed_until = self._clock() + self._retry_after_s
            return None
