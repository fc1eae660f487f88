"""The command line as a user runs it: route, demo, up (foreground, clean stop), render-envoy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from plano_devtools.local import free_port
from tests.conftest import DEMO_CONFIG

CLI = [sys.executable, "-m", "plano_extproc.cli"]


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_route_prints_the_embedded_routers_decision():
    code = run("route", "--config", str(DEMO_CONFIG), "Write a Python function that implements binary search")
    assert code.returncode == 0, code.stderr
    decision = json.loads(code.stdout)
    assert decision["route"] == "code_generation" and decision["model"] == "anthropic/claude-sonnet-4-20250514"
    france = json.loads(run("route", "--config", str(DEMO_CONFIG), "What is the capital of France?").stdout)
    assert france["route"] is None and france["models"] == ["openai/gpt-4o-mini"]


def test_route_rejects_a_bad_body_with_a_message():
    result = run("route", "--config", str(DEMO_CONFIG), "--body", '{"messages": 3}')
    assert result.returncode == 2 and "'messages' must be an array" in result.stderr and "Traceback" not in result.stderr


def test_render_envoy_validates(tmp_path):
    out = tmp_path / "envoy.yaml"
    result = run("render-envoy", "--config", str(DEMO_CONFIG), "-o", str(out))
    assert result.returncode == 0, result.stderr
    envoy = os.path.join(os.path.dirname(sys.executable), "envoy")
    check = subprocess.run([envoy, "--mode", "validate", "-c", str(out)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.integration
def test_demo_runs_the_seed_requests_through_envoy_and_stops():
    result = run("demo", timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = {line[2:20].strip(): line for line in result.stdout.splitlines() if line.startswith("  ")}
    assert "route=code_generation" in lines["code generation"]
    assert "route=complex_reasoning" in lines["complex reasoning"]
    assert "route=(no route)" in lines["capital of France"]
    assert "pinned=True" in lines["affinity: pinned"]
    assert "mock-openai answered as gpt-4o" in result.stdout
    assert "stopped" in result.stdout


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


@pytest.mark.integration
def test_up_serves_the_configured_port_and_stops_everything_on_sigterm():
    port = free_port()
    proc = subprocess.Popen([*CLI, "up", "--config", str(DEMO_CONFIG), "--mock-providers", "--port", str(port), "--metrics-port", str(free_port())],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        lines = []
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if "Ctrl-C stops everything" in line or proc.poll() is not None:
                break
        assert f"ready on http://127.0.0.1:{port}" in "".join(lines), "".join(lines)
        envoys = _children(proc.pid)
        assert envoys, "envoy is not a child of up"
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            data=json.dumps({"messages": [{"role": "user", "content": "hello"}]}).encode(),
            headers={"content-type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["choices"][0]["message"]["content"] == "mock-openai answered as gpt-4o-mini"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        for pid in envoys:
            assert not os.path.exists(f"/proc/{pid}") or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
