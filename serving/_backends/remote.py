"""A remote OpenAI-compatible backend, called from the router process over HTTP."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from controlplane.config import OpenAIModelSpec
from controlplane.errors import SetupError
from serving._backends.base import OpenAIStreamReader
from serving._tool_calls import tool_fields


def read_api_key(spec: OpenAIModelSpec) -> str | None:
    """The backend's API key from this process's environment or its key file; never passed through Ray."""
    if spec.api_key_env:
        key = os.environ.get(spec.api_key_env)
        if not key:
            raise SetupError(what=f"the remote backend reads its API key from ${spec.api_key_env}, which is not set "
                                  "where the router replica runs", fix=f"export {spec.api_key_env} where the Ray node "
                                  "starts (before `ray start`), or use api_key_file on a path every node mounts")
        return key
    if spec.api_key_file:
        path = Path(spec.api_key_file).expanduser()
        if not path.is_file():
            raise SetupError(what=f"the remote backend's key file {path} does not exist where the router replica runs",
                             fix="create it (mode 0600) on every node, or use api_key_env")
        if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise SetupError(what=f"the key file {path} is readable by others", fix=f"chmod 600 {path}")
        return path.read_text().strip()
    return None


def _body(spec: OpenAIModelSpec, call: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    body: dict[str, Any] = {"model": spec.remote_model, "max_tokens": call["max_tokens"],
                            "temperature": call.get("temperature", 0.0), "stream": True,
                            "stream_options": {"include_usage": True}}
    if call.get("json_schema") is not None:
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "output", "schema": call["json_schema"]}}
    if call.get("choice"):
        body["structured_outputs"] = {"choice": call["choice"]}
    if "prompt" in call:
        return "completions", {**body, "prompt": call["prompt"]}
    return "chat/completions", {**body, "messages": call["messages"], **tool_fields(call)}


class RemoteBackend:
    def __init__(self, spec: OpenAIModelSpec) -> None:
        key = read_api_key(spec)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
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
