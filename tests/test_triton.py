"""The Triton router backend: the tensor contract of both model repositories, the client against a real
tritonserver on the CPU (nvidia-pytriton) serving `arch_router_cpu`, and the whole gateway (Envoy +
ext_proc + Triton) including Triton dying and coming back.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from plano_extproc.config import RouterConfig, parse_config
from plano_extproc.conversation import Turn
from plano_extproc.router.base import RouterError, RouteSpec
from plano_extproc.router.triton import TritonRouter, grpc_target
from tests.conftest import DEMO_CONFIG, ROOT

REPO = ROOT / "triton_models"
GPU_ENSEMBLE = REPO / "arch_router_trtllm" / "ensemble" / "config.pbtxt"
CPU_MODEL = REPO / "arch_router_cpu" / "config.pbtxt"

#: what TritonRouter sends (name -> Triton type) and reads
CLIENT_INPUTS = {
    "text_input": "TYPE_STRING",
    "max_tokens": "TYPE_INT32",
    "end_id": "TYPE_INT32",
    "pad_id": "TYPE_INT32",
    "top_k": "TYPE_INT32",
    "exclude_input_in_output": "TYPE_BOOL",
}
CLIENT_OUTPUT = ("text_output", "TYPE_STRING")


# ------------------------------------------------------------------------------- pbtxt (no protobuf)


def _tokens(text: str) -> list[str]:
    text = re.sub(r"#[^\n]*", "", text)
    return re.findall(r'"(?:[^"\\]|\\.)*"|[{}\[\]:,]|[^\s{}\[\]:,"]+', text)


def parse_pbtxt(text: str) -> dict:
    """Protobuf text format -> dict; repeated fields become lists. Enough for Triton model configs."""
    tokens = _tokens(text)
    pos = 0

    def value():
        nonlocal pos
        tok = tokens[pos]
        if tok == "{":
            pos += 1
            return message("}")
        if tok == "[":
            pos += 1
            items = []
            while tokens[pos] != "]":
                if tokens[pos] == ",":
                    pos += 1
                    continue
                items.append(value())
            pos += 1
            return items
        pos += 1
        if tok.startswith('"'):
            return json.loads(tok)
        return tok

    def message(end: str | None) -> dict:
        nonlocal pos
        out: dict = {}
        while pos < len(tokens) and tokens[pos] != end:
            if tokens[pos] == ",":
                pos += 1
                continue
            key = tokens[pos]
            pos += 1
            if tokens[pos] == ":":
                pos += 1
            v = value()
            if key in out:
                prev = out[key]
                out[key] = (prev if isinstance(prev, list) else [prev]) + (v if isinstance(v, list) else [v])
            else:
                out[key] = v
        pos += 1
        return out

    return message(None)


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def tensors(config: dict, kind: str) -> dict[str, dict]:
    return {t["name"]: t for t in as_list(config.get(kind, []))}


def test_pbtxt_parser_reads_nested_and_repeated_fields():
    parsed = parse_pbtxt('name: "m" # c\ninput [ { name: "a" dims: [ 1 ] }, { name: "b", optional: true } ]\np { key: "k" value: { s: "v" } }\np { key: "j" }')
    assert parsed["name"] == "m"
    assert [t["name"] for t in parsed["input"]] == ["a", "b"] and parsed["input"][0]["dims"] == ["1"]
    assert [p["key"] for p in parsed["p"]] == ["k", "j"]


@pytest.mark.parametrize("path", [GPU_ENSEMBLE, CPU_MODEL], ids=["gpu-ensemble", "cpu-model"])
def test_model_declares_what_the_client_sends_and_reads(path: Path):
    config = parse_pbtxt(path.read_text())
    inputs, outputs = tensors(config, "input"), tensors(config, "output")
    for name, data_type in CLIENT_INPUTS.items():
        assert name in inputs, f"{path}: missing input {name}"
        assert inputs[name]["data_type"] == data_type, f"{path}: {name} is {inputs[name]['data_type']}"
        assert inputs[name]["dims"] == ["1"]
    # only text_input and max_tokens may be required: the client sends the rest only when declared
    required = {n for n, t in inputs.items() if t.get("optional") != "true"}
    assert required == {"text_input", "max_tokens"}
    assert outputs[CLIENT_OUTPUT[0]]["data_type"] == CLIENT_OUTPUT[1]
    assert int(config["max_batch_size"]) > 0


def test_gpu_and_cpu_models_declare_the_same_client_tensors():
    gpu, cpu = parse_pbtxt(GPU_ENSEMBLE.read_text()), parse_pbtxt(CPU_MODEL.read_text())
    pick = lambda cfg, kind: {  # noqa: E731
        n: (t["data_type"], t["dims"], t.get("optional", "false")) for n, t in tensors(cfg, kind).items() if n in CLIENT_INPUTS or n == "text_output"
    }
    assert pick(gpu, "input") == pick(cpu, "input")
    assert pick(gpu, "output") == pick(cpu, "output")


def test_gpu_ensemble_steps_are_wired():
    config = parse_pbtxt(GPU_ENSEMBLE.read_text())
    steps = config["ensemble_scheduling"]["step"]
    assert [s["model_name"] for s in steps] == ["preprocessing", "tensorrt_llm", "postprocessing"]
    declared = set(tensors(config, "input")) | set(tensors(config, "output"))
    produced: set[str] = set()
    for step in steps:
        sub = parse_pbtxt((REPO / "arch_router_trtllm" / step["model_name"] / "config.pbtxt").read_text())
        sub_in, sub_out = tensors(sub, "input"), tensors(sub, "output")
        maps_in = {m["key"]: m["value"] for m in as_list(step["input_map"])}
        maps_out = {m["key"]: m["value"] for m in as_list(step["output_map"])}
        for key, value in maps_in.items():
            assert key in sub_in, f"{step['model_name']} has no input {key}"
            assert value in declared or value in produced, f"{value} is neither an ensemble input nor produced earlier"
        for name, t in sub_in.items():  # every required input of a step is fed
            assert t.get("optional") == "true" or name in maps_in, f"{step['model_name']}.{name} is required but not mapped"
        for key, value in maps_out.items():
            assert key in sub_out, f"{step['model_name']} has no output {key}"
            produced.add(value)
    assert "text_output" in produced
    trt = parse_pbtxt((REPO / "arch_router_trtllm" / "tensorrt_llm" / "config.pbtxt").read_text())
    params = {p["key"]: p["value"]["string_value"] for p in as_list(trt["parameters"])}
    assert params["gpt_model_type"] == "inflight_fused_batching" and params["enable_kv_cache_reuse"] == "true"


# ------------------------------------------------------------------------------------ unit (no server)


def test_grpc_target_strips_schemes():
    assert grpc_target("127.0.0.1:8001") == ("127.0.0.1:8001", False)
    assert grpc_target("grpc://triton:8001/") == ("triton:8001", False)
    assert grpc_target("grpcs://triton:443") == ("triton:443", True)


def test_the_cpu_model_recovers_routes_and_conversation_from_the_prompt():
    import importlib.util
    import sys
    import types

    from plano_extproc.router.prompt import build_router_prompt, render_qwen_chatml

    # model.py imports the Python backend's utils at import time; a stub module is enough to parse prompts
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    spec = importlib.util.spec_from_file_location("arch_router_cpu_model", REPO / "arch_router_cpu" / "1" / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    routes = [RouteSpec("code", 'writing code, "quoted" </routes> tags'), RouteSpec("math", "maths {braces}")]
    turns = [Turn("user", "hi\n</conversation>\nthere"), Turn("assistant", "hello"), Turn("user", "sort a list in Python")]
    got_routes, got_turns = module.parse_prompt(render_qwen_chatml(build_router_prompt(routes, turns)))
    assert got_routes == routes and got_turns == turns


# ------------------------------------------------------------------------------ real Triton on the CPU

triton_local = pytest.importorskip("plano_devtools.triton_local")


def served_since(server, before: float, expected: int, wait_s: float = 3.0) -> float:
    """Triton requests served since `before` (its counters land a moment after the reply: poll)."""
    deadline = time.monotonic() + wait_s
    while True:
        got = server.metric("nv_inference_request_success") - before
        if got >= expected or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def _router_config(url: str, **over) -> RouterConfig:
    return RouterConfig(backend="triton", url=url, model="arch_router_cpu", timeout_ms=3000, **over)


@pytest.fixture(scope="module")
def triton():
    server = triton_local.LocalTriton()
    server.start(120)
    yield server
    server.close()


ROUTES = [
    RouteSpec("code_generation", "generating new code snippets, functions, or boilerplate based on user prompts or requirements"),
    RouteSpec("complex_reasoning", "complex reasoning tasks, multi-step problem solving, or detailed explanations"),
]


@pytest.mark.integration
async def test_triton_router_routes_like_the_embedded_router(triton):
    from plano_extproc.router.embedded import EmbeddedRouter

    router = TritonRouter(_router_config(triton.grpc_url))
    embedded = EmbeddedRouter()
    try:
        await router.warm_up(ROUTES)
        assert await router.ready()
        for text in ("Write a Python function that implements binary search", "What is the capital of France?",
                     "Explain step by step why the sky is blue and what would change on Mars"):
            conversation = [Turn("user", text)]
            assert await router.choose_route(ROUTES, conversation) == embedded.choose_route_sync(ROUTES, conversation)
        before = triton.metric("nv_inference_request_success")
        await asyncio.gather(*(router.choose_route(ROUTES, [Turn("user", f"write a sort function #{i}")]) for i in range(8)))
        assert served_since(triton, before, 8) == 8
    finally:
        await router.close()
        await embedded.close()


@pytest.mark.integration
async def test_triton_router_errors_are_router_errors(triton):
    down = TritonRouter(_router_config(f"127.0.0.1:{triton_local._free_port()}"), warm_up_wait_s=0.3)
    unknown = TritonRouter(RouterConfig(backend="triton", url=triton.grpc_url, model="no_such_model", timeout_ms=2000))
    try:
        started = time.monotonic()
        await down.warm_up(ROUTES)  # never raises: start-up goes on without Triton
        assert time.monotonic() - started < 3
        assert not await down.ready()
        with pytest.raises(RouterError) as exc:
            await down.choose_route(ROUTES, [Turn("user", "hello")])
        assert exc.value.kind == "unavailable"
        assert not await unknown.ready()
        with pytest.raises(RouterError) as exc:
            await unknown.choose_route(ROUTES, [Turn("user", "hello")])
        assert exc.value.kind == "unavailable"
    finally:
        await down.close()
        await unknown.close()


# ------------------------------------------------------------------- the gateway with the Triton backend


def _gateway_config(url: str) -> str:
    data = yaml.safe_load(DEMO_CONFIG.read_text())
    data.setdefault("routing", {})["router"] = {
        "backend": "triton",
        "url": url,
        "model": "arch_router_cpu",
        "timeout_ms": 2000,
        "breaker_failures": 2,
        "breaker_open_seconds": 1,
        # every request must reach Triton (or fail over): the decision cache would answer repeats itself
        "decision_cache_seconds": 0,
    }
    return yaml.safe_dump(data)


def _post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _seed_requests() -> list[tuple[str, dict]]:
    from plano_devtools.demo import DECISIONS

    return [(path, body) for _label, path, body, headers in DECISIONS if not headers]  # affinity ones pin


def _expected_with_embedded() -> list[tuple[str | None, list[str]]]:
    from plano_extproc.apis import ENDPOINTS
    from plano_extproc.engine import DecisionEngine, build_router_chain

    # the reference decisions: a router call must never time out here, however busy the machine
    text = DEMO_CONFIG.read_text().replace("routing:\n", "routing:\n  router: {timeout_ms: 60000}\n", 1)
    config = parse_config(text, {"OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k"})

    async def run() -> list[tuple[str | None, list[str]]]:
        engine = DecisionEngine(config, build_router_chain(config))
        await engine.warm_up()
        try:
            await engine.warm_up()  # a cold first call can exceed the 1 s router timeout on a busy machine
            out = []
            for path, body in _seed_requests():
                routed = await engine.route_raw(ENDPOINTS[path][0], json.dumps(body).encode())
                out.append((routed.decision.route, list(routed.decision.models)))
            return out
        finally:
            await engine.close()

    return asyncio.run(run())


@pytest.fixture(scope="module")
def triton_gateway(triton):
    from tests.harness import RunningGateway

    gateway = RunningGateway(_gateway_config(triton.grpc_url))
    yield gateway
    gateway.close()


@pytest.mark.integration
def test_gateway_on_triton_decides_like_embedded_and_survives_triton_dying(triton, triton_gateway):
    expected = _expected_with_embedded()
    seed = _seed_requests()

    def decide_all() -> list[dict]:
        out = []
        for path, body in seed:
            status, decision = _post(triton_gateway.url + path, body)
            assert status == 200, decision
            out.append(decision)
        return out

    # 1. Triton serves: same routes and models as the embedded backend, and Triton really answered
    before = triton.metric("nv_inference_request_success")
    decisions = decide_all()
    assert [(d["route"], d["models"]) for d in decisions] == expected
    assert all(d["source"] != "fallback" for d in decisions)
    assert [d["source"] for d in decisions if d["route"]].count("router") >= 3
    assert served_since(triton, before, len(seed)) == len(seed)  # every seed request has routes

    # 2. Triton dies: requests still get 200 decisions, from the embedded fallback, with the same routes
    triton.kill()
    down = decide_all()
    assert all(d["source"] == "fallback" for d in down)
    assert [(d["route"], d["models"]) for d in down] == expected

    # 3. Triton comes back (same ports): after the breaker's open period a probe succeeds and closes it
    triton.start(120)
    deadline = time.monotonic() + 20
    while True:
        status, probe = _post(triton_gateway.url + seed[0][0], seed[0][1])
        assert status == 200
        if probe["source"] != "fallback" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert probe["source"] == "router", probe
    before = triton.metric("nv_inference_request_success")
    again = decide_all()
    assert all(d["source"] != "fallback" for d in again)
    assert [(d["route"], d["models"]) for d in again] == expected
    assert served_since(triton, before, len(seed)) == len(seed)


@pytest.mark.integration
async def test_local_gateway_starts_its_own_triton():
    from plano_devtools.local import LocalGateway, free_port

    gateway = LocalGateway(_gateway_config("unused:1"), env={}, mock_providers=True, listener_port=free_port(), local_triton=True)
    async with gateway:
        assert gateway.triton is not None and gateway.config.routing.router.url == gateway.triton.grpc_url
        status, decision = await asyncio.to_thread(
            _post, gateway.url + "/routing/v1/chat/completions",
            {"messages": [{"role": "user", "content": "Write a Python function that implements binary search"}]},
        )
        assert status == 200 and decision["route"] == "code_generation" and decision["source"] == "router"
        assert served_since(gateway.triton, 0, 1) >= 1
    assert gateway.triton is None
