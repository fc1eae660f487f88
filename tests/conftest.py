from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "plano_extproc" / "demo" / "config.yaml"
LEGACY_CONFIG = ROOT / "examples" / "config-legacy-per-provider.yaml"
DEMO_ENV = {"OPENAI_API_KEY": "sk-test-openai-0000", "ANTHROPIC_API_KEY": "sk-ant-test-0000"}

# the venv's bin (envoy, plano-extproc) first on PATH for subprocess-based tests
_BIN = str(Path(os.sys.executable).parent)
if not os.environ.get("PATH", "").startswith(_BIN):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")


@pytest.fixture
def demo_config():
    from plano_extproc.config import load_config

    return load_config(DEMO_CONFIG, DEMO_ENV)


@pytest.fixture(scope="module")
def gw():
    """The demo gateway (real Envoy + ext_proc + embedded router + mock providers), one per test module."""
    from tests.harness import RunningGateway

    running = RunningGateway(DEMO_CONFIG.read_text())
    yield running
    running.close()


@pytest.fixture(autouse=True)
def _reset_mocks(request):
    if "gw" in request.fixturenames:
        gw = request.getfixturevalue("gw")
        gw.openai_mock.reset()
        gw.anthropic_mock.reset()
        gw.openai_mock.chunk_delay = gw.anthropic_mock.chunk_delay = 0.0
        gw.openai_mock.answer_delay = gw.anthropic_mock.answer_delay = 0.0


def demo_config_with(**routing: object) -> str:
    """The demo config's text with these `routing` keys set (the rest of the file as it is)."""
    import yaml

    data = yaml.safe_load(DEMO_CONFIG.read_text())
    data.setdefault("routing", {}).update(routing)
    return str(yaml.safe_dump(data, sort_keys=False))
