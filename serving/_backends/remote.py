"""A remote OpenAI-compatible backend, called from the router process over HTTP."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import httpx

from controlplane.config import OpenAIModelSpec
from serving._backends.base import OpenAIStreamReader
from serving._fields import SAMPLING_KEYS


def _body(spec: OpenAIModelSpec, call: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {"model": spec.remote_model, "max_tokens": call["max_tokens"],
                            "temperature": call.get("temperature", 0.0), "stream": True,
                            "stream_options": {"include_usage": True},
                            **{key: call[key] for key in SAMPLING_KEYS if key in call}}
    if call.get("json_schema") is not None:
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "output", "schema": call["json_schema"]}}
    if call.get("choice"):
        body["structured_outputs"] = {"choice": call["choice"]}
    if "prompt" in call:
        return "completions", {**body, "prompt": call["prompt"]}
    return "chat/completions", {**body, "messages": call["messages"]}


class RemoteBackend:
    def __init__(self, spec: OpenAIModelSpec) -> None:
        headers = {}
        if spec.api_key_env:
            headers["Authorization"] = f"Bearer {os.environ[spec.api_key_env]}"
        self._spec = spec
        self._client = httpx.AsyncClient(base_url=spec.base_url.rstrip("/") + "/", headers=headers,
                                         timeout=httpx.Timeout(None, connect=5.0))

    async def stream(self, call: dict[str, Any], affinity_key: str | None) -> AsyncIterator[dict[str, Any]]:
        path, body = _body(self._spec, call)
        reader = OpenAIStreamReader(completions="prompt" in call)
        try:
            async with self._client.stream("POST", path, json=body) as response:
                if response.status_code >= 400:
                    text = (await response.aread()).decode(errors="replace")
                    error = {"status": response.status_code, "message": text[:500]}
                    if response.headers.get("retry-after", "").replace(".", "", 1).isdigit():
                        error["retry_after_s"] = float(response.headers["retry-after"])
                    yield {"done": True, "error": error}
                    return
                async for line in response.aiter_lines():
                    for event in reader.read(line):
                        yield event
                        if event.get("done"):
                            return
        except httpx.HTTPError as exc:
            yield {"done": True, "error": {"status": 503, "message": f"{type(exc).__name__}: {exc}"}}
            return
        yield reader.done()
