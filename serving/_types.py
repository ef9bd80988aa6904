"""What callers send to the router and what they get back (the handle API's types)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from controlplane._tracing import TracingConfig

Priority = Literal["control", "normal", "bulk"]


class Identity(BaseModel):
    """Who makes a model call: every call is admitted and accounted under this identity."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mission_id: str = Field("default", min_length=1, description="The mission the call belongs to.")
    agent_id: str = Field("anonymous", min_length=1, description="The agent that makes the call.")
    priority: Priority = Field("normal", description="control (supervisor, planner, judge) goes "
                               "before normal, which goes before bulk.")


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="The tool's name.")
    arguments: str = Field("{}", description="The arguments as JSON text, as the OpenAI API sends them.")


class ToolCall(BaseModel):
    """A tool call of an assistant reply, in the OpenAI wire shape."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, description="The call's id; the tool message with its result carries it.")
    type: Literal["function"] = Field("function", description="Always `function`.")
    function: FunctionCall = Field(description="The tool and its arguments.")

    def arguments(self) -> Any:
        """The arguments, parsed; raises json.JSONDecodeError when the model wrote no valid JSON."""
        return json.loads(self.function.arguments or "{}")


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="The tool's name.")
    description: str = Field("", description="What the tool does, for the model.")
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}},
                                       description="JSON schema of the arguments object.")
    strict: bool | None = Field(None, description="Accepted for OpenAI compatibility; constrained models "
                                "always follow the schema.")


class ToolDefinition(BaseModel):
    """A tool the model may call, as in OpenAI's `tools`."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["function"] = Field("function", description="Always `function`.")
    function: FunctionDefinition = Field(description="Its name, description and parameter schema.")


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The one tool the model must call.")


class NamedToolChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["function"] = Field("function", description="Always `function`.")
    function: NamedFunction = Field(description="The tool to call.")


ToolChoice = Literal["auto", "none", "required"] | NamedToolChoice
TOOL_CHOICES = ("auto", "none", "required")


class ChatMessage(BaseModel):
    """One message, OpenAI-shaped: an assistant message may carry `tool_calls` (content may then be null), and a
    `tool` message answers one of them by `tool_call_id`."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"] = Field(description="Who speaks.")
    content: str | None = Field(None, description="The message text; null only on an assistant message. A list of "
                                "text parts is joined.")
    name: str | None = Field(None, description="The speaker's name (passed on as it is).")
    tool_calls: list[ToolCall] | None = Field(None, description="Assistant only: the tool calls it made.")
    tool_call_id: str | None = Field(None, description="Tool only: the id of the call this result answers.")

    @field_validator("content", mode="before")
    @classmethod
    def _join_text_parts(cls, content: Any) -> Any:
        if not isinstance(content, list):
            return content
        kinds = {part.get("type") if isinstance(part, dict) else type(part).__name__ for part in content}
        if kinds - {"text"}:
            raise ValueError(f"content parts of types {sorted(map(str, kinds - {'text'}))} are not supported; "
                             "send text parts only")
        return "".join(part.get("text", "") for part in content)

    @model_validator(mode="after")
    def _role_fields(self) -> ChatMessage:
        if self.content is None and self.role != "assistant":
            raise ValueError(f"a {self.role} message needs content; only an assistant message may have none")
        if self.tool_calls and self.role != "assistant":
            raise ValueError(f"a {self.role} message has tool_calls; only assistant messages carry them")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id of the call it answers")
        return self

    def to_wire(self) -> dict[str, Any]:
        """The message as the call dict carries it: role and content always, the other fields when set."""
        return self.model_dump(exclude_none=True) | {"content": self.content}


class ToolFields(BaseModel):
    """OpenAI's tool-calling request fields (shared by the handle API's ChatRequest and the HTTP body)."""

    tools: list[ToolDefinition] | None = Field(None, description="Tools the model may call.")
    tool_choice: ToolChoice | None = Field(None, description="auto (the default with tools), none (answer in "
                                           "text), required (call some tool), or {type: function, function: "
                                           "{name}} (call that tool).")
    parallel_tool_calls: bool | None = Field(None, description="Whether one reply may make several calls "
                                             "(native models); a constrained model makes one per reply.")

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _known_choice(cls, choice: Any) -> Any:
        if isinstance(choice, str) and choice not in TOOL_CHOICES:
            raise ValueError(f"tool_choice={choice!r} is none of {', '.join(TOOL_CHOICES)} or "
                             "{type: function, function: {name}}")
        return choice

    @field_validator("tool_choice")
    @classmethod
    def _choice_names_a_tool(cls, choice: ToolChoice | None, info: ValidationInfo) -> ToolChoice | None:
        names = [tool.function.name for tool in info.data.get("tools") or []]
        if choice == "required" and not names:
            raise ValueError("tool_choice='required' needs tools; send tools or leave tool_choice out")
        if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
            raise ValueError(f"tool_choice names {choice.function.name!r}, which is not among the tools "
                             f"{names}; name one of them")
        return choice

    def tool_body(self) -> dict[str, Any]:
        """The tool fields the caller set, as the call dict carries them; none without tools (an empty `tools`,
        or a tool_choice of auto or none alone, means no tools, and engines refuse them)."""
        if not self.tools:
            return {}
        return self.model_dump(include={"tools", "tool_choice", "parallel_tool_calls"}, exclude_none=True)


class ChatRequest(ToolFields):
    """One chat completion through the router (tool calling: see ToolFields)."""

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

    text: str = Field(description="The generated text; empty when the model only called tools.")
    tool_calls: list[ToolCall] = Field(default_factory=list, description="The tool calls the model asked for "
                                       "(finish_reason is then `tool_calls`).")
    model: str = Field(description="The model that answered (the fallback's name if one did).")
    backend: str = Field(description="`vllm`, `scripted` or `openai`.")
    usage: Usage = Field(description="Token counts of this call.")
    ttft_s: float = Field(description="Seconds from admission to the first generated text.")
    latency_s: float = Field(description="Seconds from admission to the end of the reply.")
    queue_s: float = Field(0.0, description="Seconds the call waited in the router before it went to a "
                           "replica (admission and the model's in-flight gate); latency_s - queue_s is model time.")
    finish_reason: str = Field(description="`stop`, `length` or `tool_calls`.")
