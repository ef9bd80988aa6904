"""What one task attempt spends its time and money on, summed as its model and tool calls come back.

Pure: the agent (or its tool-calling loop) feeds each router reply and each tool's run time in; `detail()`
is the `AttemptDetail` that goes into the attempt's `StepResult`, its event and its bar in the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from controlplane._core.timeline import AttemptDetail


@dataclass(kw_only=True)
class AttemptMeter:
    """Running sums of one attempt's model calls and tools."""

    queue_s: float = 0.0
    model_s: float = 0.0
    usd: float = 0.0
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    tools_s: dict[str, float] = field(default_factory=dict)

    def add_chat(self, *, queue_s: float, latency_s: float, usd: float, model: str, input_tokens: int,
                 output_tokens: int) -> None:
        """One model call: `latency_s` is the router's, from admission to the last token, `queue_s` the part of
        it spent waiting (admission and the model's gate); the rest is model time."""
        self.queue_s += queue_s
        self.model_s += max(0.0, latency_s - queue_s)
        self.usd += usd
        self.model = model
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens

    def add_tool(self, name: str, seconds: float) -> None:
        self.tools_s[name] = self.tools_s.get(name, 0.0) + seconds

    def detail(self) -> AttemptDetail:
        return AttemptDetail(queue_s=self.queue_s, model_s=self.model_s, tools_s=dict(self.tools_s), usd=self.usd,
                             model=self.model, input_tokens=self.input_tokens, output_tokens=self.output_tokens)
