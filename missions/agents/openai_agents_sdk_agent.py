"""An OpenAI Agents SDK agent, run as a `kind: python` agent inside the control plane.

    agents:
      - {name: advisor, role: advisor, kind: python,
         entrypoint: "missions.agents.openai_agents_sdk_agent:run", tools: [calculator]}

The SDK's model is `OpenAIChatCompletionsModel` over an `AsyncOpenAI` client pointed at the router's
OpenAI-compatible API (`ctx.openai_base_url`), with headers that carry this agent's identity
(`ctx.openai_headers`): the router schedules, rate-limits, budgets and accounts the SDK's calls as this agent's,
and the mission result shows its tokens under the agent. Tracing is off: nothing leaves the machine.

The agent offers the SDK a `calculator` function tool that calls the mission's governed calculator through
`ctx.tools.call` (allow-list, schema check, timeout). The router returns the model's choice as OpenAI `tool_calls`
(constrained decoding makes them for models without a tool parser, the bundled SmolLM2 among them); the SDK runs
the tool and sends its result back for the answer.
"""

from __future__ import annotations

from typing import Any

from agents import Agent, ModelSettings, OpenAIChatCompletionsModel, Runner, function_tool, set_tracing_disabled
from openai import AsyncOpenAI

MAX_TOKENS = 96
MAX_TURNS = 3


def build_agent(ctx: Any) -> Agent:
    """The SDK agent for one task: the router as its model, the mission's calculator as its tool."""
    set_tracing_disabled(True)
    client = AsyncOpenAI(base_url=ctx.openai_base_url, api_key=ctx.openai_api_key, default_headers=ctx.openai_headers,
                         max_retries=0)

    @function_tool
    async def calculator(expression: str) -> str:
        """Evaluate arithmetic such as "20000000 * 0.01".

        Args:
            expression: The arithmetic to evaluate.
        """
        return str(await ctx.tools.call("calculator", {"expression": expression}))

    instructions = f"You are the {ctx.agent.role} of a team. {ctx.agent.instructions}".strip()
    return Agent(name=ctx.agent.name, instructions=instructions, tools=[calculator],
                 model=OpenAIChatCompletionsModel(model=ctx.model, openai_client=client),
                 model_settings=ModelSettings(max_tokens=MAX_TOKENS, temperature=0.0))


async def run(task: Any, ctx: Any) -> str:
    """The agent: one SDK run on the task, with the results of earlier tasks as context."""
    earlier = "\n".join(f"[{dep}] {output}" for dep, output in ctx.context.items())
    prompt = f"Team goal: {ctx.goal}\nYour task: {task.description}" + (f"\nEarlier results:\n{earlier}" if earlier
                                                                          else "")
    result = await Runner.run(build_agent(ctx), prompt, max_turns=MAX_TURNS)
    ctx.emit("framework", "openai-agents run finished", {"turns": len(result.raw_responses)})
    return str(result.final_output).strip()
