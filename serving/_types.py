"""What callers send to the router and what they get back (the handle API's types)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serving._fields import SamplingFields

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


class ChatRequest(SamplingFields):
    """One chat completion through the router (the sampling fields are those of `SamplingFields`)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="A model name from the serving config.")
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation so far.")
    max_tokens: int = Field(256, ge=1, le=32768, description="Most completion tokens to generate.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature; 0 = greedy.")
    json_schema: dict[str, Any] | None = Field(None, description="Constrain the reply to this JSON "
                                               "schema (guided decoding).")
    choice: list[str] | None = Field(None, min_length=1, description="Constrain the reply to one "
                                     "of these strings (guided decoding).")
    identity: Identity = Field(default_factory=Identity, description="Who makes the call.")
    timeout_s: float | None = Field(None, gt=0, description="Give up after this long, queueing "
                                    "included; None = the router's request_timeout_s.")


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
    finish_reason: str = Field(description="`stop` or `length`.")
