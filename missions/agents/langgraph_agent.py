"""A LangGraph graph with a tool node, run as a `kind: python` agent inside the control plane.

    agents:
      - {name: analyst, role: analyst, kind: python, entrypoint: "missions.agents.langgraph_agent:run",
         tools: [read_file]}

The graph is `lookup -> tools -> write`:
- `lookup` asks for the facts file: an AI message with a `read_file` tool call;
- `tools` is LangGraph's prebuilt ToolNode. Its tool calls `ctx.tools.call`, so the call passes the agent's
  allow-list (`authorize()`), the schema check, the timeout and result clipping like any built-in loop call;
- `write` calls the model with `langchain_openai.ChatOpenAI`, pointed at the router's OpenAI-compatible API with
  headers that carry this agent's identity: the router schedules, rate-limits, budgets and accounts the call as
  this agent's, and the mission result shows its tokens under the agent.

Today the graph decides the tool call itself, because the router's HTTP API does not yet return `tool_calls`
(the router-tools work adds them, with constrained decoding for models without a native tool parser). Once it
does, `write` can become `llm.bind_tools(tools)` with `tools_condition` routing back to the ToolNode: the model
then chooses the calls.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import StructuredTool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode

FACTS_PATH = "tidy_facts.md"
MAX_FACT_CHARS = 700
MAX_TOKENS = 96


def governed_read_file(ctx: Any) -> StructuredTool:
    """The mission's `read_file`, as a LangChain tool that goes through the control plane's door."""

    async def read_file(path: str) -> str:
        return str(await ctx.tools.call("read_file", {"path": path}))

    return StructuredTool.from_function(coroutine=read_file, name="read_file",
                                        description="Read a text file of the mission's workspace.")


def build_graph(ctx: Any, task: Any) -> Any:
    """The compiled graph for one task."""
    llm = ChatOpenAI(model=ctx.model, base_url=ctx.openai_base_url, api_key=ctx.openai_api_key,
                     default_headers=ctx.openai_headers, max_tokens=MAX_TOKENS, temperature=0.0, max_retries=0)

    def lookup(state: MessagesState) -> dict[str, list[Any]]:
        call = {"name": "read_file", "args": {"path": FACTS_PATH}, "id": "lookup-1", "type": "tool_call"}
        return {"messages": [AIMessage(content="", tool_calls=[call])]}

    async def write(state: MessagesState) -> dict[str, list[Any]]:
        facts = next(m.content for m in reversed(state["messages"]) if isinstance(m, ToolMessage))
        prompt = [SystemMessage(f"You are the {ctx.agent.role} of a team. {ctx.agent.instructions}".strip()),
                  HumanMessage(f"Product facts:\n{str(facts)[:MAX_FACT_CHARS]}\n\nYour task: {task.description}")]
        return {"messages": [await llm.ainvoke(prompt)]}

    graph = StateGraph(MessagesState)
    graph.add_node("lookup", lookup)
    graph.add_node("tools", ToolNode([governed_read_file(ctx)]))
    graph.add_node("write", write)
    graph.add_edge(START, "lookup")
    graph.add_edge("lookup", "tools")
    graph.add_edge("tools", "write")
    graph.add_edge("write", END)
    return graph.compile()


async def run(task: Any, ctx: Any) -> str:
    """The agent: run the graph on the task and return the model's answer."""
    state = await build_graph(ctx, task).ainvoke({"messages": [HumanMessage(task.description)]})
    ctx.emit("framework", "langgraph graph finished", {"nodes": ["lookup", "tools", "write"],
                                                      "messages": len(state["messages"])})
    return str(state["messages"][-1].content).strip()
