"""Code that test missions name by import path: a python agent, tools, and an MCP server (run as a script)."""

from __future__ import annotations

from typing import Any


async def python_agent(task: Any, ctx: Any) -> dict[str, Any]:
    """A `kind: python` agent: one governed tool call and one router call as this agent."""
    total = await ctx.tools.call("calculator", {"expression": "6*7"})
    reply = await ctx.chat([{"role": "user", "content": "What is the capital of France?"}])
    ctx.emit("note", "asked the router once")
    return {"total": total, "capital": reply.text}


def gpu_ids() -> list[str]:
    """The GPUs Ray gave the process this tool runs in; raises when there are none."""
    import ray

    ids = [str(g) for g in ray.get_gpu_ids()]
    if not ids:
        raise RuntimeError("this tool ran without a GPU")
    return ids


def main() -> None:
    """An MCP stdio server with one tool, `shout`, written with the official SDK."""
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("echo")

    @server.tool()
    def shout(text: str) -> str:
        """Upper-case the text."""
        return text.upper()

    server.run()


if __name__ == "__main__":
    main()
