"""The serving config: the shipped default, and clear errors for bad files."""

import pytest

from controlplane import SetupError, SpecError
from controlplane.config import ServingConfig
from controlplane.config.serving import parse_serving_config
from serving import load_serving_config


def test_shipped_default_is_the_default_model_on_vllm():
    config = load_serving_config()
    assert list(config.models) == ["default"]
    assert config.models["default"].kind == "vllm"
    assert config.models["default"].replicas.max_replicas == 1


def test_unknown_kind_names_the_field(tmp_path):
    path = tmp_path / "serving.yaml"
    path.write_text("models:\n  m:\n    kind: tgi\n")
    with pytest.raises(SpecError) as info:
        load_serving_config(path)
    assert "models.m" in str(info.value) and str(path) in str(info.value)


def test_fallback_must_name_a_model():
    with pytest.raises(SpecError, match="fallback"):
        parse_serving_config({"models": {"a": {"kind": "scripted", "fallback": "nope"}}})


def test_every_bad_fallback_is_named_at_once():
    with pytest.raises(SpecError) as info:
        parse_serving_config({"models": {"a": {"kind": "scripted", "fallback": "nope"},
                                         "b": {"kind": "scripted", "fallback": "b"}}}, where="s.yaml")
    assert [(p.where, p.value, p.why) for p in (info.value, *info.value.also)] == [
        ("s.yaml: models.a.fallback", "nope", "no model has that name; known models: a, b"),
        ("s.yaml: models.b.fallback", "b", "a model cannot fall back to itself")]


def test_an_unknown_fields_value_is_not_quoted_as_it_may_be_a_credential():
    with pytest.raises(SpecError) as info:
        parse_serving_config({"models": {"gpt": {"kind": "openai", "base_url": "https://example.invalid/v1",
                                                 "remote_model": "gpt-x", "api_key": "sk-not-for-logs"}}},
                             where="s.yaml")
    assert info.value.where == "s.yaml: models.gpt.api_key" and info.value.value == "<not shown>"
    assert "sk-not-for-logs" not in str(info.value)


def test_a_models_problem_is_at_its_yaml_path_and_an_unknown_field_is_told_the_likeliest_meant():
    with pytest.raises(SpecError) as info:
        parse_serving_config({"models": {"default": {"kind": "vllm", "replica": {"min_replicas": 1}},
                                         "other": {"kind": "vlm"}}}, where="s.yaml")
    fixes = {problem.where: problem.fix for problem in (info.value, *info.value.also)}
    assert fixes["s.yaml: models.default.replica"].startswith("did you mean `replicas`? Else remove it; the fields "
                                                              "here are breaker, dtype, engine_kwargs")
    assert fixes["s.yaml: models.other"] == "set 'kind' to one of 'vllm', 'scripted', 'openai'"


def test_min_replicas_above_max_quotes_both():
    with pytest.raises(SpecError, match="min_replicas=3 exceeds max_replicas=2"):
        parse_serving_config({"models": {"a": {"kind": "vllm", "replicas": {"min_replicas": 3, "max_replicas": 2}}}})


def test_missing_file_bad_yaml_and_a_key_written_twice_are_spec_errors(tmp_path):
    with pytest.raises(SpecError, match="no such file"):
        load_serving_config(tmp_path / "missing.yaml")
    path = tmp_path / "serving.yaml"
    path.write_text("models:\n  m: [unclosed\n")
    with pytest.raises(SpecError, match=r"serving\.yaml:\d+: .* is invalid: the file is not valid YAML"):
        load_serving_config(path)
    path.write_text("models:\n  m: {kind: scripted}\n  m: {kind: vllm}\n")
    with pytest.raises(SpecError, match=r"serving\.yaml:3: \"'m' \(first on line 2\)\" is invalid: the key is written"):
        load_serving_config(path)


def test_every_missing_api_key_env_var_is_named_at_once(monkeypatch):
    monkeypatch.delenv("CP_TEST_MISSING_KEY", raising=False)
    monkeypatch.delenv("CP_TEST_OTHER_KEY", raising=False)
    remote = {"kind": "openai", "base_url": "https://example.invalid/v1", "remote_model": "gpt-x"}
    config = ServingConfig.model_validate({"models": {
        "gpt": {**remote, "api_key_env": "CP_TEST_MISSING_KEY"},
        "mini": {**remote, "api_key_env": "CP_TEST_MISSING_KEY"},
        "other": {**remote, "api_key_env": "CP_TEST_OTHER_KEY"}}})
    with pytest.raises(SetupError) as info:
        config.check_env()
    assert info.value.what == ("models.gpt reads its API key from $CP_TEST_MISSING_KEY, which is not set; "
                               "models.mini reads its API key from $CP_TEST_MISSING_KEY, which is not set; "
                               "models.other reads its API key from $CP_TEST_OTHER_KEY, which is not set")
    assert info.value.fix == "export CP_TEST_MISSING_KEY=<key> CP_TEST_OTHER_KEY=<key> before starting"
    monkeypatch.setenv("CP_TEST_MISSING_KEY", "k")
    with pytest.raises(SetupError) as info:
        config.check_env()
    assert info.value.what == "models.other reads its API key from $CP_TEST_OTHER_KEY, which is not set"
    monkeypatch.setenv("CP_TEST_OTHER_KEY", "k")
    config.check_env()


def test_fractional_gpu_needs_a_matching_memory_fraction():
    with pytest.raises(SpecError, match="num_gpus=0.5 shares a GPU"):
        parse_serving_config({"models": {"a": {"kind": "vllm", "replicas": {"num_gpus": 0.5}}}})
    config = parse_serving_config({"models": {"a": {"kind": "vllm", "gpu_memory_utilization": 0.45,
                                                    "replicas": {"num_gpus": 0.5}}}})
    assert config.models["a"].replicas.num_gpus == 0.5


def test_tool_style_defaults_per_kind_and_native_vllm_needs_a_parser():
    config = parse_serving_config({"models": {
        "plain": {"kind": "vllm"}, "parsed": {"kind": "vllm", "tool_call_parser": "hermes"},
        "script": {"kind": "scripted"}, "api": {"kind": "openai", "base_url": "http://x/v1", "remote_model": "m"}}})
    assert {name: spec.tool_style for name, spec in config.models.items()} == {
        "plain": "constrained", "parsed": "native", "script": "constrained", "api": "native"}
    with pytest.raises(SpecError, match="tool_call_parser"):
        parse_serving_config({"models": {"m": {"kind": "vllm", "tool_style": "native"}}})


def test_a_scripted_rule_replies_with_exactly_one_of_text_and_tool_call():
    rule = {"match": "x", "text": "t", "tool_call": {"name": "f"}}
    with pytest.raises(SpecError, match="exactly one of text and tool_call"):
        parse_serving_config({"models": {"m": {"kind": "scripted", "replies": [rule]}}})
