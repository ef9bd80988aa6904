"""The mission's MCP servers, held by one actor: started once at mission start, stopped at its end, whatever
the outcome. Agents call their tools through it as `<server>.<tool>`. Uses the official `mcp` SDK (2.x)."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import sys
import threading
from collections.abc import Mapping
from typing import Any, BinaryIO

import ray

from actors._together import at_once
from controlplane._core.tools import ToolSpec
from controlplane.config._tools import McpServerDecl
from controlplane.errors import SpecError, ToolError

logger = logging.getLogger(__name__)
STOP_TIMEOUT_S = 10.0
STDERR_LINES = 5


class McpConnection:
    """One server's client session, held open by its own task (the SDK's cancel scopes must be entered and
    left in one task)."""

    def __init__(self, decl: McpServerDecl) -> None:
        self.decl = decl
        self.client: Any = None
        self.tools: list[Any] = []
        self._ready = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._lost = False
        self._restarting = asyncio.Lock()
        self._resolved = decl
        self._stderr: StderrTail | None = None
        self.refused: tuple[int, str] | None = None
        """The HTTP error status of the server's last answer, if it was one (the SDK's error leaves it out)."""

    async def start(self) -> None:
        """Connect and list the tools; SpecError naming the server when it does not start in time."""
        self._resolved = self.decl.resolved(os.environ)
        self._ready.clear()
        self._task = asyncio.create_task(self._hold())
        ready = asyncio.create_task(self._ready.wait())
        try:
            done, _ = await asyncio.wait({ready, self._task}, timeout=self.decl.startup_timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:  # another server failed: drop this one's connection at once
            ready.cancel()
            self._task.cancel()
            raise
        if ready in done:
            if not self.tools:
                await self.stop()
                raise self._failed("it lists no tools", "give the server at least one tool, or remove it")
            return
        ready.cancel()
        if self._task in done:
            error = _cause(self._task.exception() or RuntimeError("its session ended"))
            if self.refused and self.refused[0] in (401, 403):
                fix = ("check the credential it is given (in `headers`, such as `Authorization: Bearer ${TOKEN}`, or "
                       "in the URL): is the variable set to a current one where the MCP host runs?")
            else:
                fix = "check the command (or URL), run it by hand to see its error"
            raise self._failed(f"it did not start ({type(error).__name__}: {error}){self._last_words()}", fix)
        await self.stop()
        raise self._failed(f"it did not list its tools within startup_timeout_s={self.decl.startup_timeout_s:g}"
                           f"{self._last_words()}",
                           "check that it speaks MCP on this transport, or raise startup_timeout_s")

    def _last_words(self) -> str:
        """What the server said as it failed: an HTTP server's error status (the SDK's error leaves it out), the
        end of a stdio server's stderr."""
        if self.refused:
            return f"; it answered HTTP {self.refused[0]} {self.refused[1]}"
        if self._stderr is None:
            return ""
        text = " | ".join(self._stderr.last_lines())
        return f"; its stderr ended: {text}" if text else ""

    def lost(self) -> None:
        """Its session closed under a call (the server crashed or exited): the next call starts it again."""
        self._lost = True

    async def restart_if_lost(self) -> None:
        async with self._restarting:
            if self._lost:
                logger.warning("MCP server %r went away; starting it again", self.decl.name)
                await self.stop()
                self._stop.clear()
                await self.start()  # if it fails, the next call tries again
                self._lost = False

    async def _hold(self) -> None:
        from mcp import Client

        async with Client(self._target()) as client:
            if self._stderr is not None:
                self._stderr.close()
            self.client = client
            self.tools = list((await client.list_tools()).tools)
            self._ready.set()
            await self._stop.wait()

    def _target(self) -> Any:
        """The SDK's transport to the server; a stdio server's stderr goes through a new StderrTail."""
        decl = self._resolved
        if decl.url is not None:
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            self.refused = None
            client = httpx2.AsyncClient(headers=decl.headers, event_hooks={"response": [self._note_refusal]})
            return streamable_http_client(decl.url, http_client=client)
        from mcp import StdioServerParameters
        from mcp.client.stdio import stdio_client

        secrets = {os.environ[name]: f"${{{name}}}" for name in self.decl.references() if os.environ.get(name)}
        self._stderr = StderrTail(secrets)
        return stdio_client(StdioServerParameters(command=_program(decl.command or ""), args=list(decl.args),
                                                  env=dict(decl.env) or None), errlog=self._stderr.sink)

    async def _note_refusal(self, response: Any) -> None:
        refused = response.status_code >= 400
        self.refused = (response.status_code, response.reason_phrase) if refused else None

    async def stop(self) -> None:
        self._stop.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._task, STOP_TIMEOUT_S)
        except BaseException:  # a server that will not stop is cut off; the mission's end must not hang on it
            self._task.cancel()
        if self._stderr is not None:
            self._stderr.close()

    def _failed(self, why: str, fix: str) -> SpecError:
        return SpecError(where=f"mcp_servers({self.decl.name})", value=self.decl.command or self.decl.url,
                         why=f"MCP server {self.decl.name!r}: {why}", fix=fix)


class StderrTail:
    """A stdio server's stderr, through a pipe: copied on to this process's stderr (the MCP host's Ray log), and
    its last lines kept for the error that names a server that does not start. Each of `secrets` (a value: its
    `${NAME}`) is written as its name in both."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self._secrets = sorted(secrets.items(), key=lambda item: -len(item[0]))
        read_fd, write_fd = os.pipe()
        self.sink = os.fdopen(write_fd, "w")
        self._lines: collections.deque[str] = collections.deque(maxlen=STDERR_LINES)
        self._copier = threading.Thread(target=self._copy, args=(os.fdopen(read_fd, "rb"),), name="mcp-stderr",
                                        daemon=True)
        self._copier.start()

    def _copy(self, source: BinaryIO) -> None:
        with source:
            for line in source:
                text = line.decode(errors="replace")
                for value, name in self._secrets:
                    text = text.replace(value, name)
                sys.stderr.write(text)
                self._lines.append(text.rstrip())

    def close(self) -> None:
        """Close this process's end of the pipe, once the server holds its own (or will not start): the copy ends
        when the server does."""
        self.sink.close()

    def last_lines(self, wait_s: float = 1.0) -> list[str]:
        self.close()
        self._copier.join(wait_s)
        return [line for line in self._lines if line]


def tool_spec(decl: McpServerDecl, tool: Any) -> ToolSpec:
    return ToolSpec(name=f"{decl.name}.{tool.name}", description=tool.description or "",
                    parameters=dict(tool.input_schema or {"type": "object", "properties": {}}),
                    timeout_s=decl.timeout_s, approval=decl.approval, side_effects=decl.side_effects,
                    idempotent=not decl.side_effects, max_result_chars=decl.max_result_chars)


@ray.remote(num_cpus=0)
class McpHostActor:
    """Holds the mission's MCP servers. `start` starts them at once, all or nothing: a server that fails stops
    the others. Agents start meanwhile: `tools` answers once `start` has ended.

    Detached, like the agents that hold its handle: it outlives a supervisor that dies, whose successor re-attaches
    and calls `start` again, to the same outcome. When it dies itself, Ray restarts it and its next call starts the
    servers again; a call in flight then fails rather than run twice."""

    def __init__(self, servers: list[McpServerDecl]) -> None:
        self._connections = {decl.name: McpConnection(decl) for decl in servers}
        self._specs: dict[str, ToolSpec] = {}
        self._starting: asyncio.Future[None] | None = None

    async def start(self) -> dict[str, ToolSpec]:
        await asyncio.shield(self._started())  # the servers' start is the actor's, not one caller's
        return dict(self._specs)

    def _started(self) -> asyncio.Future[None]:
        """The servers' start, begun by whichever call comes first."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start_all())
        return self._starting

    async def _start_all(self) -> None:
        connections = list(self._connections.values())
        try:
            await at_once(*(c.start() for c in connections))
        except BaseException:
            await asyncio.gather(*(c.stop() for c in connections), return_exceptions=True)
            raise
        self._specs = {spec.name: spec for c in connections for spec in (tool_spec(c.decl, t) for t in c.tools)}

    async def tools(self) -> dict[str, ToolSpec]:
        """The servers' tools, once `start` has ended; none if it failed (the mission fails on that, not here)."""
        await asyncio.wait({self._started()})  # raises nothing, and cancels nothing when this call is cancelled
        return dict(self._specs)

    async def call(self, name: str, arguments: dict[str, Any]) -> Any:
        await asyncio.shield(self._started())
        server, tool = name.split(".", 1)
        connection, spec = self._connections[server], self._specs[name]
        await connection.restart_if_lost()
        try:
            result = await _send(connection, spec, tool, arguments)
        except Exception as exc:
            if not _session_expired(exc):
                raise
            # an HTTP server on the 2025 protocol that restarted refuses the old session before running the call:
            # a new session may send it again
            logger.warning("MCP server %r no longer knows its session; opening a new one", server)
            connection.lost()
            await connection.restart_if_lost()
            result = await _send(connection, spec, tool, arguments)
        text = "\n".join(_readable(part) for part in result.content or [])
        if result.is_error:
            raise ToolError(tool=name, why=text or "the server reported an error",
                            fix="see the server's log; the model was told and may call it differently")
        structured = result.structured_content
        if isinstance(structured, dict) and set(structured) == {"result"}:
            return structured["result"]
        return structured if structured is not None else text

    async def stop(self) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()  # servers still starting are dropped at once, not waited for
        await asyncio.gather(*(c.stop() for c in self._connections.values()), return_exceptions=True)


async def _send(connection: McpConnection, spec: ToolSpec, tool: str, arguments: dict[str, Any]) -> Any:
    try:
        return await asyncio.wait_for(connection.client.call_tool(tool, arguments), spec.timeout_s)
    except TimeoutError:
        raise ToolError(tool=spec.name, why=f"the MCP call did not finish within timeout_s={spec.timeout_s:g}",
                        fix="raise the server's timeout_s, or make the tool faster") from None
    except Exception as exc:
        if connection.refused and not _session_expired(exc):
            status, phrase = connection.refused
            raise ToolError(tool=spec.name, why=f"the server answered HTTP {status} {phrase}",
                            fix="check the credential the server is given" if status in (401, 403)
                            else "see the server's log") from None
        if not _connection_closed(exc):
            raise
        connection.lost()  # not sent again: it may have run
        raise ToolError(tool=spec.name, why="the server's connection closed during the call (it crashed or exited)",
                        fix="the next call starts the server again; see the server's log") from None


def _session_expired(exc: Exception) -> bool:
    """The server answered HTTP 404 for the session (the 2025 protocol's sessions), spelt as the Python SDK's
    server ("Session not found", with its JSON body) or client ("Session terminated", without one) spell it."""
    from mcp.shared.exceptions import MCPError

    return isinstance(exc, MCPError) and exc.error.message.lower() in ("session not found", "session terminated")


def _readable(part: Any) -> str:
    """One block of a tool's result as a text model reads it: text, an embedded text resource's text, and in place
    of what it cannot read (an image, audio, a binary resource, a link), a note that says what was left out."""
    kind = getattr(part, "type", "unknown")
    if kind == "text":
        return str(part.text)
    if kind == "resource" and getattr(part.resource, "text", None) is not None:
        return str(part.resource.text)
    source = getattr(part, "uri", None) or getattr(getattr(part, "resource", None), "uri", None)
    mime_type = getattr(part, "mime_type", None) or getattr(getattr(part, "resource", None), "mime_type", None)
    details = ", ".join(str(d) for d in (source, mime_type) if d)
    return f"[{kind} left out{f': {details}' if details else ''}]"


def _cause(error: BaseException) -> BaseException:
    """The one error inside the SDK's task groups, which wrap it (`ExceptionGroup`, twice for stdio)."""
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def _connection_closed(exc: Exception) -> bool:
    from mcp.shared.exceptions import MCPError
    from mcp.types import CONNECTION_CLOSED

    return isinstance(exc, MCPError) and exc.code == CONNECTION_CLOSED


def _program(command: str) -> str:
    """`python`/`python3` is this interpreter, so a server written in Python sees the control plane's packages
    (the `mcp` SDK) whether or not the virtualenv is on PATH."""
    return sys.executable if command in ("python", "python3") else command
