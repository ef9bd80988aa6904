"""A tiny stdio MCP server (official `mcp` SDK) that serves the product facts of the demo missions.

Run by a mission (`mcp_servers: [{name: facts, command: python, args: [-m, missions.mcp.facts_server]}]`); its
tools then reach the agents as `facts.list_topics` and `facts.lookup`. Try it by hand with the SDK's client, or:
    python -m missions.mcp.facts_server      (speaks MCP on stdin/stdout)
"""

from __future__ import annotations

from pathlib import Path

from mcp.server.mcpserver import MCPServer

FACTS_FILE = Path(__file__).resolve().parent.parent / "workspace" / "tidy_facts.md"

server = MCPServer("facts", instructions="Product facts of Tidy, the demo product.")


def _facts() -> dict[str, str]:
    """`- Topic: text` lines of the facts file, by lower-case topic."""
    facts = {}
    for line in FACTS_FILE.read_text(encoding="utf-8").splitlines():
        topic, colon, text = line.removeprefix("- ").partition(":")
        if line.startswith("- ") and colon:
            facts[topic.strip().lower()] = text.strip()
    return facts


@server.tool()
def list_topics() -> list[str]:
    """The topics there are facts about, e.g. price, audience, alternatives."""
    return sorted(_facts())


@server.tool()
def lookup(topic: str) -> str:
    """The fact about one topic (see list_topics), e.g. "price".

    Args:
        topic: A topic name such as "price" or "key feature".
    """
    facts = _facts()
    key = topic.strip().lower()
    if key not in facts:
        raise ValueError(f"no fact about {topic!r}; topics: {', '.join(sorted(facts))}")
    return facts[key]


if __name__ == "__main__":
    server.run("stdio")
