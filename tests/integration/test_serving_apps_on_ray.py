"""Missions with different serving configs at once: the shared app is never redeployed under a running mission;
the other config joins as its own app (named by its hash) and both answer."""

from __future__ import annotations

import asyncio
import time

import pytest
from ray import serve

from controlplane.config import ServingConfig
from controlplane.errors import SetupError
from serving import ChatMessage, ChatRequest, deploy
from serving._apps import config_app_name
from serving._deploy import _running_config
from tests.helpers import agent_token

OTHER = {"models": {"other-scripted": {"kind": "scripted", "replies": [{"match": ".", "text": "from the other app"}]}}}


def _ask(client, model: str) -> str:
    request = ChatRequest(model=model, messages=[ChatMessage(role="user", content="hi")], max_tokens=8,
                          token=agent_token("apps", "a"))
    return asyncio.run(client.chat(request)).text


def test_another_config_under_a_running_mission_joins_as_a_separate_app(scripted_router):
    router, name = scripted_router, scripted_router.app_name
    before = _running_config(name)
    other = deploy(ServingConfig.model_validate(OTHER), app_name=name, missions_running=1)
    try:
        assert other.app_name.startswith(f"{name}-") and other.app_name != router.app_name
        assert _running_config(name) == before  # the running mission's app is untouched
        assert _ask(other, "other-scripted") == "from the other app"
        assert _ask(router, "scripted") != ""
        again = deploy(ServingConfig.model_validate(OTHER), app_name=name, missions_running=1)
        assert again.app_name == other.app_name  # the same config finds its app again
    finally:
        deleting = time.monotonic()
        serve.delete(other.app_name)
    # a stopping router drains 2 s, not Serve's default 30 (SERVE_CONTROLLER_ENV)
    assert time.monotonic() - deleting < 15


def test_a_model_whose_replicas_cannot_start_fails_the_deploy_naming_it_and_leaves_no_app(scripted_router):
    """Before, `serve.run`'s RuntimeError said only "Failed to update the deployments ['vllm:default']"."""
    broken = {"models": {"broken": {"kind": "scripted", "faults": {"start_error": "no weights in /models/broken"}}}}
    name = scripted_router.app_name
    with pytest.raises(SetupError, match=r"did not start: models\.broken \(scripted:broken\): RuntimeError: no weights "
                       r"in /models/broken.*Fix: correct that model"):
        deploy(ServingConfig.model_validate(broken), app_name=name, missions_running=1)
    assert config_app_name(name, ServingConfig.model_validate(broken).model_dump(mode="json")) not in \
        serve.status().applications  # nothing half-started
