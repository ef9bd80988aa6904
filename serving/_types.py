"""What callers send to the router and what they get back (the handle API's types)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from controlplane._tracing import TracingConfig

Priority = Literal["control", "normal", "bulk"]


class Identity(BaseModel):
    """Who makes a model call: every call is admitted and accounted under this identity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mission_id: str = Field("default", min_length=1, description="The mission the call belongs to.")
    agent_id: str = Field("anonymous", min_length=1, description="The agent that makes the call.")
    priority: Priority = Field("normal", description="control (supervisor, planner, judge) goes "
                               "before normal, which goes before bulk.")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"] = Field(description="Who speaks.")
    content: str = Field(description="The message text.")


class ChatRequest(BaseModel):
    """One chat completion through the router."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="A model name from the serving config.")
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")
    max_tokens: int = Field(256, ge=1, le=32768, description="Most completion tokens to generate.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature; 0 = greedy.")
    json_schema: dict[str, Any] | None = Field(None, description="Constrain the reply to this JSON "
                                               "schema (guided decoding).")
    choice: list[str] | None = Field(None, min_length=1, description="Constrain the reply to one "
                                     "of these strings (guided decoding).")
    token: str | None = Field(None, repr=False, description="The caller's capability token (the supervisor "
                              "gives each agent one); the router takes the mission and agent from it, never from "
                              "the request.")
    priority: Priority | None = Field(None, description="The priority asked for, at most the token's; None = "
                                      "normal (bulk for a bulk-only token).")
    timeout_s: float | None = Field(None, gt=0, description="Give up after this long, queueing "
                                    "included; None = the router's request_timeout_s.")
    trace: dict[str, str] = Field(default_factory=dict, description="The caller's W3C trace context "
                                  "(`traceparent`, `tracestate`): the router's `chat` span continues it.")
    trace_sink: TracingConfig | None = Field(None, description="Where the router sends this call's spans "
                                             "(the file, OTLP endpoint and content switch of the caller's "
                                             "tracing config); None: the router's own OTLP endpoint, if any.")


class Usage(BaseModel):
    prompt_tokens: int = Field(description="Tokens in the prompt.")
    completion_tokens: int = Field(description="Tokens generated.")
    usd: float = Field(0.0, description="What the call cost, at the model's price in the serving config.")

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class ChatResult(BaseModel):
    """The reply and its accounting."""

    text: str = Field(description="The generated text.")
    model: str = Field(description="The model that answered (the fallback's name if one did).")
    backend: str = Field(description="`vllm`, `scripted` or `openai`.")
    usage: Usage = Field(description="Token counts of this call.")
    ttft_s: float = Field(description="Seconds from admission to the first generated text.")
    latency_s: float = Field(description="Seconds from admission to the end of the reply.")
    queue_s: float = Field(0.0, description="Seconds the call waited in the router before it went to a "
                           "replica (admission and the model's in-flight gate); latency_s - queue_s is model time.")
    finish_reason: str = Field(description="`stop` or `length`.")
