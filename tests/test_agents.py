"""Real coding agents through the real Envoy: Claude Code (`claude -p`) and Codex CLI (`codex exec`), each on
its own vendor's model and on the other vendor's, each finishing with the answering model's reply printed.

The agents come from the npm registry, pinned, installed into `.agents/` by `make agents` (which `make
test` runs). They run offline against the gateway and its local mock providers: a fresh HOME / CODEX_HOME,
no inherited environment, telemetry and update checks off, bounded by a timeout. The mocks answer with
tool calls when the prompt names a tool (plano_devtools.mock_providers), so each tool test is a whole
agent turn: the model calls a tool, the agent runs it, sends the result back, and prints the final answer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.harness import CLAUDE, CODE, REASONING, RunningGateway

pytestmark = pytest.mark.integration

BIN = ROOT / ".agents" / "node_modules" / ".bin"
TIMEOUT = 120  # seconds for one agent run; a run takes about a second here
SECRET = "the secret word is pelican"
CONFIG = f"""
version: v0.4.0
listeners:
  - {{name: egress_traffic, type: model, address: 0.0.0.0, port: 12000, timeout: 60s}}
model_providers:
  - {{model: openai/gpt-4o-mini, access_key: $OPENAI_API_KEY, default: true}}
  - {{model: anthropic/{CLAUDE}, access_key: $ANTHROPIC_API_KEY}}
"""


def _agent(name: str) -> Path:
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed: Claude Code and Codex CLI (npm packages) cannot run here")
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make agents` (installs the pinned Claude Code and Codex CLI from npm)")
    return path


@pytest.fixture(scope="module")
def direct() -> Iterator[RunningGateway]:
    """No routes: the model the agent asks for answers."""
    running = RunningGateway(CONFIG)
    yield running
    running.close()


@pytest.fixture(autouse=True)
def _fresh_mocks(request):
    for name in ("direct", "gw"):
        if name in request.fixturenames:
            for mock in request.getfixturevalue(name).gateway.mocks.values():
                mock.reset()


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    (work / "note.txt").write_text(SECRET + "\n")
    return work


@dataclass
class Run:
    stdout: str
    stderr: str
    returncode: int = 0

    def __str__(self) -> str:
        return f"stdout:\n{self.stdout}\nstderr:\n{self.stderr[-3000:]}"


def _run(argv: list[str], env: dict[str, str], cwd: Path, *, check: bool = True) -> Run:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "NO_COLOR": "1", "TERM": "dumb"}
    done = subprocess.run(argv, env={**base, **env}, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT)
    run = Run(done.stdout, done.stderr, done.returncode)
    assert done.returncode == 0 or not check, f"{argv[0]} exited {done.returncode}\n{run}"
    return run


# ------------------------------------------------------------------------------------------ Claude Code


def claude_code(gw: RunningGateway, prompt: str, model: str, home: Path, cwd: Path) -> Run:
    env = {
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": gw.url,
        "ANTHROPIC_API_KEY": "sk-ant-client-key",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    return _run([str(_agent("claude")), "-p", prompt, "--model", model, "--no-session-persistence"], env, cwd)


def test_claude_code_on_claude(direct, tmp_path, workdir):
    run = claude_code(direct, "say hello", CLAUDE, tmp_path, workdir)
    assert run.stdout.strip() == f"mock-anthropic answered as {CLAUDE}", run
    (seen,) = direct.anthropic_mock.requests_snapshot()
    assert seen["path"].startswith("/v1/messages") and seen["body"]["stream"] is True
    assert seen["headers"]["x-api-key"] != "sk-ant-client-key"  # the gateway's key, never the client's
    assert direct.openai_mock.requests_snapshot() == []


@pytest.mark.parametrize(("model", "mock"), [(CLAUDE, "anthropic"), ("gpt-4o-mini", "openai")], ids=["claude", "gpt"])
def test_claude_code_runs_a_tool_and_finishes_with_the_models_answer(direct, tmp_path, workdir, model, mock):
    """On GPT every turn is translated: Anthropic Messages -> Chat Completions and the stream back."""
    run = claude_code(direct, f'Use the Read tool: Read {{"file_path": "{workdir / "note.txt"}"}}', model, tmp_path, workdir)
    answer = run.stdout.strip()
    assert answer.startswith(f"mock-{mock} answered as {model} with tool results:"), run
    assert SECRET in answer, run  # Claude Code read the file and sent its contents back
    first, second = direct.gateway.mocks[mock].requests_snapshot()
    if mock == "openai":
        assert first["path"] == second["path"] == "/v1/chat/completions"
        assert {t["function"]["name"] for t in first["body"]["tools"]} >= {"Read", "Bash"}
        (result,) = [m for m in second["body"]["messages"] if m["role"] == "tool"]
        assert SECRET in result["content"]
    else:
        results = [b for b in second["body"]["messages"][-1]["content"] if b.get("type") == "tool_result"]
        assert len(results) == 1 and SECRET in str(results[0]["content"])
    other = "anthropic" if mock == "openai" else "openai"
    assert direct.gateway.mocks[other].requests_snapshot() == []


def test_claude_code_is_routed_by_the_demo_routes_to_gpt(gw, tmp_path, workdir):
    """Asking for Claude with a reasoning prompt: the complex-reasoning route ranks gpt-4o first."""
    run = claude_code(gw, REASONING, CLAUDE, tmp_path, workdir)
    assert run.stdout.strip() == "mock-openai answered as gpt-4o", run
    assert gw.anthropic_mock.requests_snapshot() == []


def test_claude_code_falls_over_from_claude_to_gpt_inside_one_request(gw, tmp_path, workdir):
    """The code-generation route ranks Claude first: it answers 529, GPT answers in Claude Code's API."""
    gw.anthropic_mock.fail_next(status=529)
    run = claude_code(gw, CODE, "gpt-4o-mini", tmp_path, workdir)
    assert run.stdout.strip() == "mock-openai answered as gpt-4o", run
    assert [r["status"] for r in gw.anthropic_mock.requests_snapshot()] == [529]


# -------------------------------------------------------------------------------------------- Codex CLI


def codex(gw: RunningGateway, prompt: str, model: str, home: Path, cwd: Path, *, check: bool = True) -> tuple[Run, str]:
    """`codex exec` with a custom Responses provider at the gateway; (the run, the last message)."""
    codex_home = home / "codex"
    codex_home.mkdir(exist_ok=True)
    (codex_home / "config.toml").write_text(
        f'model = "{model}"\n'
        'model_provider = "plano"\n'
        "[model_providers.plano]\n"
        'name = "plano gateway"\n'
        f'base_url = "{gw.url}/v1"\n'
        'wire_api = "responses"\n'
        'env_key = "PLANO_GATEWAY_KEY"\n'
        "request_max_retries = 0\n"
        "stream_max_retries = 0\n"
    )
    env = {"HOME": str(home), "CODEX_HOME": str(codex_home), "PLANO_GATEWAY_KEY": "client-own-key"}
    last = home / "last-message.txt"
    argv = [str(_agent("codex")), "exec", "--skip-git-repo-check", "--ephemeral", "-C", str(cwd), "-m", model, "-o", str(last), prompt]
    run = _run(argv, env, cwd, check=check)
    return run, last.read_text().strip() if last.exists() else ""


@pytest.mark.parametrize(("model", "mock", "path"), [("gpt-4o-mini", "openai", "/v1/responses"), (CLAUDE, "anthropic", "/v1/messages")], ids=["gpt", "claude"])
def test_codex_runs_a_tool_and_finishes_with_the_models_answer(direct, tmp_path, workdir, model, mock, path):
    """On Claude every turn is translated: Responses -> (Chat ->) Anthropic Messages and the stream back."""
    run, answer = codex(direct, 'Run exec_command {"cmd": "cat note.txt"}', model, tmp_path, workdir)
    assert answer.startswith(f"mock-{mock} answered as {model} with tool results:"), run
    assert SECRET in answer, run  # Codex ran the command and sent its output back
    assert answer in run.stdout  # and printed the answer
    first, second = direct.gateway.mocks[mock].requests_snapshot()
    assert first["path"] == second["path"] == path
    if mock == "anthropic":
        assert "exec_command" in {t["name"] for t in first["body"]["tools"]}
        results = [b for b in second["body"]["messages"][-1]["content"] if b.get("type") == "tool_result"]
        assert len(results) == 1 and SECRET in str(results[0]["content"])
    else:
        (output,) = [i for i in second["body"]["input"] if i.get("type") == "function_call_output"]
        assert SECRET in str(output["output"])
    other = "anthropic" if mock == "openai" else "openai"
    assert direct.gateway.mocks[other].requests_snapshot() == []


def test_codex_is_routed_by_the_demo_routes_to_claude(gw, tmp_path, workdir):
    """Asking for gpt-4o-mini with a code prompt: the code-generation route ranks Claude first."""
    run, answer = codex(gw, CODE, "gpt-4o-mini", tmp_path, workdir)
    assert answer == f"mock-anthropic answered as {CLAUDE}", run
    (seen,) = gw.anthropic_mock.requests_snapshot()
    assert seen["path"] == "/v1/messages" and gw.openai_mock.requests_snapshot() == []


def test_codex_falls_over_from_gpt_to_claude_inside_one_request(gw, tmp_path, workdir):
    gw.openai_mock.fail_next(status=503)
    run, answer = codex(gw, REASONING, "gpt-4o", tmp_path, workdir)
    assert answer == f"mock-anthropic answered as {CLAUDE}", run
    assert [r["status"] for r in gw.openai_mock.requests_snapshot()] == [503]


def test_codex_shows_the_providers_error_in_its_own_api(direct, tmp_path, workdir):
    """Claude's 400, translated into a Responses error: Codex stops and prints the provider's message."""
    direct.anthropic_mock.fail_next(status=400)
    run, answer = codex(direct, "say hello", CLAUDE, tmp_path, workdir, check=False)
    assert run.returncode != 0 and answer == "", run
    assert f"mock-anthropic: injected failure 400 for {CLAUDE}" in run.stdout + run.stderr, run
    assert "invalid_request_error" in run.stdout + run.stderr, run
