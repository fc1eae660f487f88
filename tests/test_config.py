"""The plano config file: what check-config accepts, what it rejects, and how it says so."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from plano_extproc.config import ConfigError, parse_config
from tests.conftest import DEMO_CONFIG, DEMO_ENV, LEGACY_CONFIG

BASE = """
version: v0.4.0
model_providers:
  - model: openai/gpt-4o-mini
    access_key: $OPENAI_API_KEY
    default: true
  - model: openai/gpt-4o
    access_key: $OPENAI_API_KEY
  - model: anthropic/claude-sonnet-4-20250514
    access_key: $ANTHROPIC_API_KEY
"""


def errors_of(text: str, env=DEMO_ENV) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), env)
    return info.value.errors


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    full_env = {k: v for k, v in os.environ.items() if k not in DEMO_ENV}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "plano_extproc.cli", *args], capture_output=True, text=True, env=full_env, timeout=120
    )


def test_seed_demo_config_in_v040_form(demo_config):
    assert demo_config.default_model == "openai/gpt-4o-mini"
    prefs = {p.name: p.models for p in demo_config.routing_preferences}
    assert prefs == {
        "code_generation": ("anthropic/claude-sonnet-4-20250514", "openai/gpt-4o"),
        "complex_reasoning": ("openai/gpt-4o", "anthropic/claude-sonnet-4-20250514"),
    }
    assert demo_config.listener_port == 12000
    assert demo_config.routing.session_ttl_seconds == 600
    assert demo_config.routing.session_max_entries == 10000
    assert demo_config.routing.router.backend == "embedded"


def test_legacy_per_provider_routes_are_migrated_with_a_warning():
    from plano_extproc.config import load_config

    config = load_config(LEGACY_CONFIG, DEMO_ENV)
    prefs = {p.name: p.models for p in config.routing_preferences}
    assert prefs == {
        "complex_reasoning": ("openai/gpt-4o",),
        "code_generation": ("anthropic/claude-sonnet-4-20250514",),
    }
    assert any("deprecated" in w for w in config.warnings)
    assert config.listener_port == 12000  # from the object form of listeners


def test_check_config_cli_accepts_both_seed_forms():
    for path in (DEMO_CONFIG, LEGACY_CONFIG):
        result = run_cli("check-config", str(path), env=DEMO_ENV)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("OK")


def test_check_config_cli_lists_every_error_and_fails(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        BASE
        + textwrap.dedent(
            """
            colour: blue
            routing_preferences:
              - name: code_generation
                description: code
                models: [openai/gpt-5]
              - name: code_generation
                description: again
                models: [gpt-4o]
            """
        )
    )
    result = run_cli("check-config", str(bad), env=DEMO_ENV)
    assert result.returncode != 0
    assert "colour: unknown key" in result.stderr
    result2 = run_cli("check-config", str(bad).replace("bad", "bad"), env=DEMO_ENV)
    assert result2.returncode != 0


def test_unknown_key_is_named_with_its_path():
    errors = errors_of(BASE.replace("default: true", "default: true\n    colour: blue"))
    assert errors == ["model_providers[0].colour: unknown key"]


def test_undeclared_model_in_a_route_names_the_path():
    errors = errors_of(
        BASE
        + """
routing_preferences:
  - name: a
    description: first
    models: [openai/gpt-4o]
  - name: b
    description: second
    models: [openai/gpt-5]
"""
    )
    assert errors == ["routing_preferences[1].models[0]: 'openai/gpt-5' is not declared in model_providers"]


def test_duplicate_route_name():
    errors = errors_of(
        BASE
        + """
routing_preferences:
  - {name: a, description: first, models: [gpt-4o]}
  - {name: a, description: second, models: [gpt-4o-mini]}
"""
    )
    assert errors == ["routing_preferences[1].name: 'a' is used by another route already"]


def test_top_level_routes_under_an_older_version_are_rejected():
    errors = errors_of(
        BASE.replace("v0.4.0", "v0.3.0")
        + """
routing_preferences:
  - {name: a, description: first, models: [gpt-4o]}
"""
    )
    assert len(errors) == 1 and errors[0].startswith("routing_preferences: top-level routing_preferences need version v0.4.0")


def test_missing_env_var_names_the_provider_and_never_a_key_value():
    errors = errors_of(BASE, env={"OPENAI_API_KEY": "sk-live-abcdef"})
    assert errors == [
        "model_providers[2].access_key (provider anthropic/claude-sonnet-4-20250514): environment variable "
        "$ANTHROPIC_API_KEY is not set"
    ]
    assert not any("sk-live-abcdef" in e for e in errors)


def test_secret_values_never_appear_in_reprs():
    config = parse_config(BASE, {"OPENAI_API_KEY": "sk-live-abcdef", "ANTHROPIC_API_KEY": "sk-ant-xyz"})
    assert config.by_model["openai/gpt-4o"].access_key.get_secret_value() == "sk-live-abcdef"
    assert "sk-live-abcdef" not in repr(config) and "sk-live-abcdef" not in str(config.providers)


def test_llm_providers_alias_and_never_both():
    ok = parse_config(BASE.replace("model_providers", "llm_providers"), DEMO_ENV)
    assert len(ok.providers) == 3
    errors = errors_of(BASE + "llm_providers:\n  - model: openai/gpt-4o\n")
    assert errors[0].startswith("llm_providers: use either model_providers")


def test_default_rules():
    two = BASE.replace("  - model: openai/gpt-4o\n", "  - model: openai/gpt-4o\n    default: true\n")
    assert errors_of(two)[0].startswith("model_providers: only one provider may be default")
    none = parse_config(BASE.replace("    default: true\n", ""), DEMO_ENV)
    assert none.default_model == "openai/gpt-4o-mini"  # the first declared provider


def test_aliases_and_model_lookup():
    config = parse_config(BASE + "model_aliases:\n  fast: {target: gpt-4o-mini}\n", DEMO_ENV)
    assert config.resolve_model("fast") == "openai/gpt-4o-mini"
    assert config.resolve_model("gpt-4o") == "openai/gpt-4o"
    assert config.resolve_model("openai/gpt-4o") == "openai/gpt-4o"
    assert config.resolve_model("gpt-5") is None
    assert errors_of(BASE + "model_aliases:\n  fast: {target: gpt-9}\n") == [
        "model_aliases.fast.target: 'gpt-9' is not declared in model_providers"
    ]


def test_listener_forms_and_default_port():
    config = parse_config(BASE, DEMO_ENV)
    assert config.listener_port == 12000
    listed = parse_config(BASE + "listeners:\n  - {name: egress, type: model, port: 10000, timeout: 30s}\n", DEMO_ENV)
    assert listed.listener_port == 10000
    legacy = parse_config(BASE + "listeners:\n  egress_traffic: {address: 127.0.0.1, port: 11000}\n", DEMO_ENV)
    assert (legacy.listener_address, legacy.listener_port) == ("127.0.0.1", 11000)
    assert errors_of(BASE + "listeners:\n  - {port: 99999}\n") == ["listeners[0].port: Input should be less than or equal to 65535"]


def test_router_section_defaults_and_requirements():
    config = parse_config(BASE, DEMO_ENV)
    assert config.routing.router.fallback == "embedded"
    errors = errors_of(BASE + "routing:\n  router: {backend: triton}\n")
    assert "routing.router.url: required for backend 'triton'" in errors
    assert errors_of(BASE + "routing:\n  router: {backend: gpt}\n")[0].startswith("routing.router.backend:")


def test_providers_needing_base_url_and_unknown_providers():
    errors = errors_of(BASE + "  - model: ollama/llama3\n  - model: acme/model-1\n")
    assert "model_providers[3].base_url: required for provider 'ollama'" in errors
    assert any(e.startswith("model_providers[4].model: unknown provider 'acme'") for e in errors)
    ok = parse_config(BASE + "  - model: acme/model-1\n    base_url: http://127.0.0.1:8000\n", DEMO_ENV)
    assert ok.by_model["acme/model-1"].base_url == "http://127.0.0.1:8000"


def test_duplicate_yaml_keys_and_bad_yaml():
    assert errors_of(BASE + "routing: {}\nrouting: {}\n")[0].startswith("(top level): duplicate key 'routing'")
    assert errors_of("version: [\n")[0].startswith("(top level):")
    assert errors_of("- just a list\n") == [
        "(top level): the config must be a mapping of keys such as version, model_providers"
    ]


def test_listener_keys_work_or_are_rejected():
    listed = parse_config(BASE + "listeners:\n  - {name: egress, type: model, port: 10000, timeout: 90s, message_format: openai}\n", DEMO_ENV)
    assert listed.listener.timeout_seconds == 90.0
    assert errors_of(BASE + "listeners:\n  - {name: a, type: agent, port: 10000}\n")[0].startswith("listeners[0].type: 'agent' listeners")
    errors = errors_of(BASE + "listeners:\n  egress_traffic: {port: 1}\n  ingress_traffic: {port: 2}\n")
    assert any(e.startswith("listeners.ingress_traffic.type:") and "not supported" in e for e in errors)
    assert any("message_format" in e for e in errors_of(BASE + "listeners:\n  - {name: a, message_format: anthropic}\n"))
    assert any("duration" in e for e in errors_of(BASE + "listeners:\n  - {name: a, timeout: soon}\n"))
    two = errors_of(BASE + "listeners:\n  - {name: a, port: 1}\n  - {name: b, port: 2}\n")
    assert two == ["listeners: 2 model listeners; plano-extproc serves one (one Envoy listener per gateway)"]


def test_overrides_work_or_are_rejected():
    routed = parse_config(
        BASE
        + "  - model: arch/Arch-Router\n    base_url: http://vllm:8000/v1\n    access_key: $ROUTER_KEY\n"
        + "overrides:\n  llm_routing_model: arch/Arch-Router\n  orchestrator_model_context_length: 4096\n  disable_signals: true\n",
        {**DEMO_ENV, "ROUTER_KEY": "rk-123"},
    )
    router = routed.routing.router
    assert (router.backend, router.url, router.model, router.prompt_max_tokens) == ("openai", "http://vllm:8000/v1", "Arch-Router", 4096)
    assert router.openai.api_key is not None and router.openai.api_key.get_secret_value() == "rk-123"
    assert errors_of(BASE + "overrides:\n  llm_routing_model: nope\n") == ["overrides.llm_routing_model: 'nope' is not declared in model_providers"]
    conflict = errors_of(BASE + "overrides:\n  llm_routing_model: gpt-4o\nrouting:\n  router: {backend: triton, url: 'x:1', model: m}\n")
    assert any("conflicts with routing.router.backend" in e for e in conflict)
    for key in ("use_agent_orchestrator: true", "prompt_target_intent_matching_threshold: 0.5", "optimize_context_window: true"):
        (error,) = errors_of(BASE + f"overrides:\n  {key}\n")
        assert error.startswith("overrides: ") and "not supported by plano-extproc" in error
    assert errors_of(BASE + "overrides:\n  disable_signals: false\n")[0].startswith("overrides.disable_signals:")
    assert errors_of(BASE + "overrides:\n  surprise: 1\n") == ["overrides.surprise: unknown key"]


def test_retry_policy_keys_work_or_are_rejected():
    text = BASE.replace(
        "    default: true\n",
        "    default: true\n    retry_policy:\n      on_timeout: {timeout: 45s}\n      retry_after_handling: {max_retry_after_seconds: 3}\n"
        "      backoff: {base_ms: 100, max_ms: 800}\n",
        1,
    )
    rules = parse_config(text, DEMO_ENV).by_model["openai/gpt-4o-mini"].retry_policy
    assert (rules.on_timeout.timeout, rules.retry_after_handling.max_retry_after_seconds, rules.backoff.base_ms) == ("45s", 3.0, 100)
    plano_only = BASE.replace("    default: true\n", "    default: true\n    retry_policy:\n      default_strategy: same_model\n", 1)
    (error,) = errors_of(plano_only)
    assert error.startswith("model_providers[0].retry_policy:") and "default_strategy is not supported" in error
    bad = BASE.replace("    default: true\n", "    default: true\n    retry_policy:\n      on_timeout: {timeout: soon}\n", 1)
    assert errors_of(bad)[0].startswith("model_providers[0].retry_policy.on_timeout.timeout:")
