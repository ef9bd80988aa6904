"""Code that test missions name by import path: a python agent, tools, and an MCP server (run as a script)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any


async def python_agent(task: Any, ctx: Any) -> dict[str, Any]:
    """A `kind: python` agent: one governed tool call and one router call as this agent."""
    total = await ctx.tools.call("calculator", {"expression": "6*7"})
    reply = await ctx.chat([{"role": "user", "content": "What is the capital of France?"}])
    ctx.emit("note", "asked the router once")
    return {"total": total, "capital": reply.text}


async def waits_for_file(task: Any, ctx: Any) -> str:
    """A `kind: python` agent that ends once the file its task's description names exists: a test's gate."""
    while not os.path.exists(task.description):
        await asyncio.sleep(0.05)
    return "go"


async def finishes_despite_cancel(task: Any, ctx: Any) -> str:
    """A `kind: python` agent that makes one router call, then swallows its step's cancellation and returns: its
    attempt ends with a result the supervisor no longer awaits."""
    await ctx.chat([{"role": "user", "content": "hello"}])
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        pass
    return "finished after all"


async def fails_despite_cancel(task: Any, ctx: Any) -> str:
    """A `kind: python` agent that makes one router call, then meets its step's cancellation with an error of its
    own: its attempt ends with an error the supervisor no longer awaits."""
    await ctx.chat([{"role": "user", "content": "hello"}])
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        raise RuntimeError("cleanup failed") from None
    return "not reached"


async def sampled_chat(task: Any, ctx: Any) -> dict[str, Any]:
    """A `kind: python` agent whose router call carries sampling fields; a keyword that is not one is refused."""
    reply = await ctx.chat([{"role": "user", "content": "hello"}], stop=[" to"], seed=7)
    try:
        await ctx.chat([{"role": "user", "content": "hello"}], token="forged")
    except Exception as exc:
        refused = f"{type(exc).__name__}: {exc}"
    return {"text": reply.text, "refused": refused}


async def calls_over_http(task: Any, ctx: Any) -> dict[str, Any]:
    """A `kind: python` agent whose outside client calls the router's HTTP API at `ctx.openai_base_url`."""
    import openai

    client = openai.AsyncOpenAI(base_url=ctx.openai_base_url, api_key=ctx.openai_api_key,
                                default_headers=ctx.openai_headers, max_retries=0)
    reply = await client.chat.completions.create(
        model=ctx.model, max_tokens=8, messages=[{"role": "user", "content": "What is the capital of France?"}])
    return {"base_url": ctx.openai_base_url, "reply": reply.choices[0].message.content}


async def context_echo(task: Any, ctx: Any) -> dict[str, Any]:
    """A `kind: python` agent whose output is the context it was given (its dependencies' outputs)."""
    return dict(ctx.context)


async def router_handle_setup(task: Any, ctx: Any) -> dict[str, Any]:
    """A `kind: python` agent whose output is how its router handle routes and sends calls, and the runtime_env
    its actor runs under."""
    import ray

    await ctx.chat([{"role": "user", "content": "hello"}])
    handle = ctx._actor.router.handle
    return {"router_in_separate_loop": handle.init_options._run_router_in_separate_loop,
            "by_reference": handle.handle_options._by_reference,
            "runtime_env": ray.get_runtime_context().get_runtime_env_string()}


async def memory_round_trip(task: Any, ctx: Any) -> dict[str, Any]:
    """A `kind: python` agent that posts a note to memory and searches for it, and reports the runtime_env its
    actor runs under."""
    import ray

    await ctx.memory.post("The launch venue is Lisbon.")
    hits = await ctx.memory.search("Where is the launch venue?")
    return {"found": [hit["text"] for hit in hits], "runtime_env": ray.get_runtime_context().get_runtime_env_string()}


class NeedsAKey:
    """A `kind: python` agent class whose constructor reads a variable no worker has."""

    def __init__(self) -> None:
        self.key = os.environ["AGENT_CODE_UNSET_KEY"]

    async def run(self, task: Any, ctx: Any) -> str:
        return self.key


def gpu_ids() -> list[str]:
    """The GPUs Ray gave the process this tool runs in; raises when there are none."""
    import ray

    ids = [str(g) for g in ray.get_gpu_ids()]
    if not ids:
        raise RuntimeError("this tool ran without a GPU")
    return ids


MCP_SERVER_WAITS_FOR = "ECHO_SERVER_WAITS_FOR"
MCP_SERVER_TOUCHES = "ECHO_SERVER_TOUCHES"
MCP_SERVER_HTTP_PORT = "ECHO_SERVER_HTTP_PORT"
MCP_SERVER_LEGACY = "ECHO_SERVER_LEGACY"
MCP_SERVER_TOKEN = "ECHO_SERVER_TOKEN"
MCP_SERVER_TOKEN_DIGEST = "ECHO_SERVER_TOKEN_DIGEST"
MCP_SERVER_REQUIRES_TOKEN = "ECHO_SERVER_REQUIRES_TOKEN"


def main() -> None:
    """An MCP server with five tools, `shout`, `crash`, `credential`, `report` and `wait`, written with the official
    SDK.
    With MCP_SERVER_TOUCHES set to a path, it creates that file as it starts; with MCP_SERVER_WAITS_FOR, it answers
    only once that file exists (a server slow to start, held open by the test or by another server). With
    MCP_SERVER_HTTP_PORT, it serves streamable HTTP on 127.0.0.1 at that port (path /mcp) instead of stdio. With
    MCP_SERVER_LEGACY, it refuses the 2026 protocol's `server/discover`, as a server on the 2025 protocol does:
    clients then open a session (the initialize handshake), which a restarted server no longer knows. `credential`
    checks the bearer token of the HTTP request, or else MCP_SERVER_TOKEN, against the SHA-256 hex digest in
    MCP_SERVER_TOKEN_DIGEST. With MCP_SERVER_REQUIRES_TOKEN, the HTTP server refuses (401) every request whose
    bearer token does not match that digest, as the SDK's bearer-token auth does."""
    import os
    import time
    from pathlib import Path

    from mcp.server.mcpserver import Context, MCPServer
    from mcp.shared.exceptions import MCPError
    from mcp.types import METHOD_NOT_FOUND

    if os.environ.get(MCP_SERVER_TOUCHES):
        Path(os.environ[MCP_SERVER_TOUCHES]).touch()
    gate = os.environ.get(MCP_SERVER_WAITS_FOR)
    while gate and not os.path.exists(gate):
        time.sleep(0.05)

    async def refuse_discover(ctx, call_next):
        if ctx.method == "server/discover":
            raise MCPError(METHOD_NOT_FOUND, "server/discover: this server speaks the 2025 protocol")
        return await call_next(ctx)

    auth = _bearer_auth(_matches) if os.environ.get(MCP_SERVER_REQUIRES_TOKEN) else {}
    server = MCPServer("echo", middleware=[refuse_discover] if os.environ.get(MCP_SERVER_LEGACY) else None, **auth)

    @server.tool()
    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    @server.tool()
    def crash() -> str:
        """End this server's process at once, as a crash would."""
        os._exit(1)

    def credential(ctx) -> str:
        """Check the credential this server was given."""
        bearer = (ctx.headers or {}).get("authorization", "").removeprefix("Bearer ")
        if not _matches(bearer or os.environ.get(MCP_SERVER_TOKEN, "")):
            raise ValueError("the credential is wrong")
        return "the credential is right"

    @server.tool(structured_output=False)  # content blocks only, as most servers answer
    def report() -> list[Any]:
        """A report in three blocks: a summary, the details as an embedded text resource, and a chart."""
        from mcp.types import EmbeddedResource, ImageContent, TextContent, TextResourceContents

        details = TextResourceContents(uri="file:///report/details.txt", mime_type="text/plain",
                                       text="Sales rose 4% in May.")
        return [TextContent(type="text", text="Summary: sales rose."),
                EmbeddedResource(type="resource", resource=details),
                ImageContent(type="image", data="iVBORw0KGgo=", mime_type="image/png")]

    server.tool(name="wait")(_wait)
    credential.__annotations__["ctx"] = Context  # this module's annotations are strings, and Context is not global
    server.tool()(credential)

    if os.environ.get(MCP_SERVER_HTTP_PORT):
        server.run("streamable-http", port=int(os.environ[MCP_SERVER_HTTP_PORT]))
    else:
        server.run()


async def _wait(seconds: float, cancelled_file: str) -> str:
    """Wait `seconds`; a call cancelled meanwhile writes `cancelled_file`."""
    from pathlib import Path

    import anyio

    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        Path(cancelled_file).write_text("cancelled")
        raise
    return "waited"


def _matches(token: str) -> bool:
    import hashlib
    import os

    return hashlib.sha256(token.encode()).hexdigest() == os.environ.get(MCP_SERVER_TOKEN_DIGEST)


def _bearer_auth(matches: Callable[[str], bool]) -> dict[str, Any]:
    """The SDK server's bearer-token auth, accepting the tokens that `matches`."""
    import os

    from mcp.server.auth.provider import AccessToken
    from mcp.server.auth.settings import AuthSettings

    class Verifier:
        async def verify_token(self, token: str) -> AccessToken | None:
            return AccessToken(token=token, client_id="test", scopes=[]) if matches(token) else None

    url = f"http://127.0.0.1:{os.environ[MCP_SERVER_HTTP_PORT]}"
    return {"token_verifier": Verifier(), "auth": AuthSettings(issuer_url=url, resource_server_url=f"{url}/mcp",
                                                               validate_token_resource=False)}


if __name__ == "__main__":
    main()
