"""Which OpenAI chat and completions request fields the router passes to the engine, uses itself, or
refuses. None is dropped silently: a field outside these tables gets a 400 naming it.
`docs/serving-fields.md` is the table for people; a unit test keeps the two in step."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from controlplane.errors import SpecError


class SamplingFields(BaseModel):
    """Sampling fields passed to the engine as they are (vLLM's SamplingParams; the remote body)."""

    stop: str | list[str] | None = Field(None, description="Stop at any of these strings (not included).")
    top_p: float | None = Field(None, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int | None = Field(None, ge=-1, description="Sample from the k likeliest tokens; -1 = all (vLLM).")
    min_p: float | None = Field(None, ge=0.0, le=1.0, description="Drop tokens below this share of the top one "
                                "(vLLM).")
    seed: int | None = Field(None, description="Seed of the sampler, for repeatable sampled replies.")
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0, description="Penalty on tokens already present.")
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0, description="Penalty by token frequency.")
    repetition_penalty: float | None = Field(None, gt=0.0, description="Multiplicative repetition penalty (vLLM).")
    logit_bias: dict[str, float] | None = Field(None, description="Token id -> bias added to its logit.")
    ignore_eos: bool = Field(False, description="Go on past the end-of-sequence token up to max_tokens (vLLM).")
    min_tokens: int | None = Field(None, ge=0, description="Generate at least this many tokens (vLLM).")

    def sampling(self) -> dict[str, Any]:
        """The sampling fields the caller set (the call dict carries only those)."""
        return self.model_dump(include=set(SamplingFields.model_fields), exclude_defaults=True)


SAMPLING_KEYS = tuple(SamplingFields.model_fields)
"""The call dict's sampling keys: the same names in the OpenAI body and in vLLM's request."""

TOOL_FIELDS = ("tools", "tool_choice", "parallel_tool_calls")
"""OpenAI tool calling (`serving._types.ToolFields`): chat completions only."""

ROUTER_FIELDS = ("model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature", "stream",
                 "stream_options", "response_format", "structured_outputs", "guided_json", "guided_choice",
                 *TOOL_FIELDS, "mission_id", "agent_id", "priority", "timeout_s", "user")
"""Fields the router reads itself (see the docs table for what each does)."""

# field -> (the values accepted, why others are refused, the fix)
ONLY_DEFAULT: dict[str, tuple[tuple[Any, ...], str, str]] = {
    "n": ((1, None), "one choice per request is supported", "send n=1 (or leave it out) and make n requests"),
    "best_of": ((1, None), "one candidate per request is supported", "leave best_of out"),
    "use_beam_search": ((False, None), "beam search is not supported by the router", "leave use_beam_search out"),
    "echo": ((False, None), "the prompt is not echoed", "leave echo out and keep the prompt on your side"),
    "suffix": ((None, ""), "insertion (suffix) is not supported", "leave suffix out"),
    "logprobs": ((False, None), "log-probabilities are not returned by the router yet",
                 "leave logprobs out, or call vLLM's own server for them"),
    "top_logprobs": ((None, 0), "log-probabilities are not returned by the router yet", "leave top_logprobs out"),
    "prompt_logprobs": ((None,), "log-probabilities are not returned by the router yet", "leave prompt_logprobs out"),
    "store": ((False, None), "completions are not stored", "leave store out"),
    "metadata": ((None, {}), "completions are not stored, so metadata has nowhere to go",
                 "leave metadata out; use the x-mission-id and x-agent-id headers for accounting"),
    "service_tier": ((None, "auto", "default"), "there is one service tier", "leave service_tier out"),
    "functions": ((None, []), "the legacy functions API is not supported", "use tools"),
    "function_call": ((None,), "the legacy functions API is not supported", "use tool_choice"),
    "audio": ((None,), "audio output is not supported", "leave audio out"),
    "modalities": ((None, ["text"]), "only text output is supported", "leave modalities out"),
    "prediction": ((None,), "predicted outputs are not supported", "leave prediction out"),
    "reasoning_effort": ((None,), "the served models take no reasoning effort", "leave reasoning_effort out"),
    "web_search_options": ((None,), "web search is not supported", "leave web_search_options out"),
}


def check_extra(extra: dict[str, Any]) -> None:
    """Refuse (SpecError, a 400) any field that is neither read nor passed on, naming it and the fix."""
    for name, value in extra.items():
        if name in TOOL_FIELDS:  # a chat body reads them; here they came with a completion
            if value is not None:
                raise SpecError(where=name, value=value, why="tool calling needs a conversation; a completion "
                                "has a prompt only", fix=f"send {name} to /v1/chat/completions, or leave it out")
            continue
        if name in ONLY_DEFAULT:
            accepted, why, fix = ONLY_DEFAULT[name]
            if not any(value == ok and type(value) is type(ok) for ok in accepted):
                raise SpecError(where=name, value=value, why=why, fix=fix)
            continue
        raise SpecError(where=name, value=value, why="the router does not know this field, so it would be ignored",
                        fix="remove it; docs/serving-fields.md lists every field the router takes")
