"""serving: vLLM replicas on Ray Serve behind an agent-aware batching router.

`deploy(config)` starts the app and returns a `RouterClient`; actors call `await client.chat(ChatRequest)` with the
capability token their supervisor gave them. People and other frameworks use the OpenAI-compatible HTTP API on
Serve's port with an API key (`controlplane keys create`).
"""

from serving._client import RouterClient, mission_tokens
from serving._config import load_serving_config
from serving._deploy import app_builder, build_app, deploy, serve_http_port
from serving._fields import SAMPLING_KEYS
from serving._types import ChatMessage, ChatRequest, ChatResult, Identity, Usage

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "ChatResult",
    "Identity",
    "RouterClient",
    "SAMPLING_KEYS",
    "Usage",
    "app_builder",
    "build_app",
    "deploy",
    "load_serving_config",
    "mission_tokens",
    "serve_http_port",
]
