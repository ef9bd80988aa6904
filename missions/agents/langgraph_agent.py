"""A LangGraph tool-calling agent, run as a `kind: python` agent inside the control plane.

    agents:
      - {name: analyst, role: analyst, kind: python, entrypoint: "missions.agents.langgraph_agent:run",
         tools: [read_file]}

The graph is LangGraph's tool loop, `agent -> tools -> agent`, until the model answers without a tool call (after
MAX_TOOL_ROUNDS rounds it is asked to answer):
- `agent` is `langchain_openai.ChatOpenAI` with `bind_tools`, pointed at the router's OpenAI-compatible API with
  headers that carry this agent's identity. The router schedules, rate-limits, budgets and accounts the call as
  this agent's, and returns the model's OpenAI `tool_calls` (constrained decoding makes them for models without
  a tool parser, the bundled SmolLM2 among them). `tools_condition` routes a reply with tool calls to `tools`;
- `tools` is LangGraph's prebuilt ToolNode. Its tool calls `ctx.tools.call`, so the call passes the agent's
  allow-list (`authorize()`), the schema check, the timeout and result clipping like any built-in loop call.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import StructuredTool
from langchain_openai import ChatOpenAI
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

FACTS_PATH = "tidy_facts.md"
MAX_TOKENS = 96
MAX_TOOL_ROUNDS = 2
"""Tool rounds the model may ask for; then it is asked to answer (a small model may call a tool again and again)."""


def product_facts_tool(ctx: Any) -> StructuredTool:
    """A LangChain tool that reads the product facts through the mission's `read_file`, the control plane's door."""

    async def read_product_facts() -> str:
        return str(await ctx.tools.call("read_file", {"path": FACTS_PATH}))

    return StructuredTool.from_function(coroutine=read_product_facts, name="read_product_facts",
                                        description="Read the facts about the product: what it does, its price.")


def build_graph(ctx: Any) -> Any:
    """The compiled tool loop of this agent."""
    tools = [product_facts_tool(ctx)]
    llm = ChatOpenAI(model=ctx.model, base_url=ctx.openai_base_url, api_key=ctx.openai_api_key,
                     default_headers=ctx.openai_headers, max_tokens=MAX_TOKENS, temperature=0.0, max_retries=0)
    with_tools, answer_now = llm.bind_tools(tools), llm.bind_tools(tools, tool_choice="none")

    async def agent(state: MessagesState) -> dict[str, list[Any]]:
        rounds = sum(isinstance(message, ToolMessage) for message in state["messages"])
        model = with_tools if rounds < MAX_TOOL_ROUNDS else answer_now
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode(tools, handle_tool_errors=True))  # a failed call is the model's to mend
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile()


async def run(task: Any, ctx: Any) -> str:
    """The agent: run the tool loop on the task and return the model's last answer."""
    system = f"You are the {ctx.agent.role} of a team. {ctx.agent.instructions}".strip()
    messages = [SystemMessage(system), HumanMessage(task.description)]
    state = await build_graph(ctx).ainvoke({"messages": messages})
    ctx.emit("framework", "langgraph graph finished", {"messages": len(state["messages"])})
    return str(state["messages"][-1].content).strip()
