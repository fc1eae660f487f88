"""The parts of `--workers N` that need no Envoy: the address scheme, the bootstrap for N workers (validated
by the real Envoy binary), the merged metrics, the shared session file, the worker side of the
processors, and the supervisor of `serve --workers` (real worker processes, driven over gRPC)."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from plano_extproc.affinity import AffinityEntry
from plano_extproc.api import routing_pb2, routing_pb2_grpc
from plano_extproc.bootstrap import render_bootstrap, render_bootstrap_yaml
from plano_extproc.contract import (
    EXTPROC_CLUSTER,
    METADATA_NAMESPACE,
    ROUTING_FILTER,
    TRANSLATE_FILTER,
    TRANSLATE_HEADER,
    TRANSLATE_ON,
    UPSTREAM_FILTER,
    WORKER_HEADER,
    WORKER_KEY,
    WORKERS_METADATA,
    worker_address,
    worker_cluster_name,
    worker_filter_name,
)
from plano_extproc.session_sqlite import SqliteSessionStore
from plano_extproc.workers.merge import MetricsMerger
from plano_extproc.workers.supervisor import next_to_recycle
from tests.conftest import DEMO_CONFIG
from tests.harness import stop_process
from tests.processors_kit import (
    client_body,
    client_headers,
    demo_config,
    envoy_metadata,
    immediate_of,
    request_body_msg,
    request_headers_msg,
    set_headers,
)
from tests.session_opener import open_store_at
from tests.test_envoy_config import _clusters, _demo, _hcm, _routes, _validate
from tests.test_processors_server import Served, first_message, serving

HPO = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

# ---------------------------------------------------------------------------------------------- addresses


def test_worker_addresses():
    assert worker_address("unix:/run/plano/extproc.sock", 0, 1) == "unix:/run/plano/extproc.sock"  # one worker: as given
    assert worker_address("unix:/run/plano/extproc.sock", 2, 3) == "unix:/run/plano/extproc-2.sock"
    assert worker_address("unix:/run/plano/extproc", 1, 2) == "unix:/run/plano/extproc-1"
    assert worker_address("unix:/run/a.b/x.sock", 1, 2) == "unix:/run/a.b/x-1.sock"
    assert worker_address("127.0.0.1:50051", 0, 4) == "127.0.0.1:50051"
    assert worker_address("127.0.0.1:50051", 3, 4) == "127.0.0.1:50054"
    assert worker_address("[::1]:50051", 1, 2) == "[::1]:50052"
    for bad in (("127.0.0.1:0", 1, 2), ("127.0.0.1:65535", 1, 2), ("nope", 0, 2), ("127.0.0.1:1", 2, 2)):
        with pytest.raises(ValueError):
            worker_address(*bad)


# ---------------------------------------------------------------------------------------------- bootstrap


def _filters(b: dict[str, Any]) -> list[dict[str, Any]]:
    return _hcm(b)["http_filters"]


def _ext_proc(f: dict[str, Any]) -> dict[str, Any]:
    config = f["typed_config"]
    return config["extension_config"]["typed_config"] if "extension_config" in config else config


def _metadata(f: dict[str, Any]) -> dict[str, str]:
    return {m["key"]: m["value"] for m in _ext_proc(f)["grpc_service"]["initial_metadata"]}


def _upstream_chain(b: dict[str, Any]) -> list[dict[str, Any]]:
    composite = next(c for c in b["static_resources"]["clusters"] if c["name"].startswith("ranked."))
    return composite["typed_extension_protocol_options"][HPO]["http_filters"]


def test_one_worker_renders_the_one_process_bootstrap():
    config = _demo()
    for address in ("unix:/run/plano/extproc.sock", "127.0.0.1:50051"):
        one = render_bootstrap_yaml(config, extproc_address=address)
        assert render_bootstrap_yaml(config, extproc_address=address, workers=1) == one
        assert render_bootstrap_yaml(config, extproc_address=address, workers=0) == one
        assert WORKER_HEADER not in one and WORKERS_METADATA not in one and worker_cluster_name(0) not in one


def test_three_workers(tmp_path: Path):
    config = _demo()
    b = render_bootstrap(config, extproc_address="unix:/run/plano/extproc.sock", workers=3, probe_port=19902)
    _validate(render_bootstrap_yaml(config, extproc_address="unix:/run/plano/extproc.sock", workers=3, probe_port=19902), tmp_path)
    clusters = _clusters(b)
    shared = clusters[EXTPROC_CLUSTER]
    paths = [e["endpoint"]["address"]["pipe"]["path"] for e in shared["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert paths == [f"/run/plano/extproc-{k}.sock" for k in range(3)]
    assert shared["lb_policy"] == "LEAST_REQUEST" and shared["health_checks"]
    assert shared["outlier_detection"]["consecutive_local_origin_failure"] == 1
    assert shared["outlier_detection"]["max_ejection_percent"] == 66  # never all of them
    for k in range(3):
        own = clusters[worker_cluster_name(k)]
        (endpoint,) = own["load_assignment"]["endpoints"][0]["lb_endpoints"]
        assert endpoint["endpoint"]["address"]["pipe"]["path"] == f"/run/plano/extproc-{k}.sock"
        assert "health_checks" not in own and "outlier_detection" not in own

    filters = _filters(b)
    names = [f["name"] for f in filters]
    assert names[0] == ROUTING_FILTER  # one routing processor, on the balanced cluster
    assert _ext_proc(filters[0])["grpc_service"]["envoy_grpc"]["cluster_name"] == EXTPROC_CLUSTER
    assert _metadata(filters[0])[WORKERS_METADATA] == "3"
    # the translator is a composite filter (finding (x)): still one filter, one rule per worker, each
    # running it only when translating and only for that worker, on that worker's cluster
    translate = filters[names.index(TRANSLATE_FILTER)]
    rules = translate["typed_config"]["xds_matcher"]["matcher_list"]["matchers"]
    assert len(rules) == 3
    for k, rule in enumerate(rules):
        wanted = {
            p["single_predicate"]["input"]["typed_config"]["header_name"]: p["single_predicate"]["value_match"]["exact"]
            for p in rule["predicate"]["and_matcher"]["predicate"]
        }
        assert wanted == {TRANSLATE_HEADER: TRANSLATE_ON, WORKER_HEADER: str(k)}
        processor = rule["on_match"]["action"]["typed_config"]["typed_config"]["typed_config"]
        assert processor["grpc_service"]["envoy_grpc"]["cluster_name"] == worker_cluster_name(k)
        assert {m["key"]: m["value"] for m in processor["grpc_service"]["initial_metadata"]}[WORKERS_METADATA] == "3"

    # routes: per-filter config repeated for every copy
    for route in _routes(b):
        keys = set(route.get("typed_per_filter_config", {}))
        assert TRANSLATE_FILTER not in keys
        if any(k.startswith(TRANSLATE_FILTER) for k in keys):
            assert {worker_filter_name(TRANSLATE_FILTER, k) for k in range(3)} <= keys

    chain = _upstream_chain(b)
    header = chain[0]["typed_config"]["mutations"]["request_mutations"][0]["append"]["header"]
    assert header == {"key": WORKER_HEADER, "value": f"%DYNAMIC_METADATA({METADATA_NAMESPACE}:{WORKER_KEY})%"}
    upstream = [f for f in chain if f["name"].startswith(UPSTREAM_FILTER + ".")]
    assert [f["name"] for f in upstream] == [worker_filter_name(UPSTREAM_FILTER, k) for k in range(3)]
    for k, copy in enumerate(upstream):
        first, *rest = copy["typed_config"]["xds_matcher"]["matcher_list"]["matchers"]
        assert first["predicate"]["not_matcher"]["single_predicate"]["value_match"]["exact"] == str(k)
        assert rest and "and_matcher" in rest[0]["predicate"]  # attempt 1 prepared downstream: still skipped
    strip = next(f for f in chain if f["name"] == "envoy.filters.http.header_mutation")
    assert {"remove": WORKER_HEADER} in strip["typed_config"]["mutations"]["request_mutations"]


def _readiness(b: dict[str, Any]) -> dict[str, float]:
    (check,) = [f["typed_config"] for listener in b["static_resources"]["listeners"] for chain in listener["filter_chains"]
                for hcm in chain["filters"] for f in hcm["typed_config"].get("http_filters", []) if "health_check" in f["name"]]
    return check["cluster_min_healthy_percentages"]


@pytest.mark.parametrize(("workers", "percent"), [(1, 100.0), (2, 50.0), (3, 100 * 2 / 3)])
def test_readiness_holds_while_at_most_one_worker_is_down(workers, percent):
    b = render_bootstrap(_demo(), extproc_address="unix:/run/plano/extproc.sock", workers=workers, probe_port=19902)
    assert _readiness(b) == {EXTPROC_CLUSTER: {"value": pytest.approx(percent)}}


def test_workers_on_tcp_take_consecutive_ports(tmp_path: Path):
    config = _demo()
    b = render_bootstrap(config, extproc_address="127.0.0.1:50051", workers=2)
    addresses = [
        e["endpoint"]["address"]["socket_address"]["port_value"]
        for e in _clusters(b)[EXTPROC_CLUSTER]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert addresses == [50051, 50052]
    _validate(render_bootstrap_yaml(config, extproc_address="127.0.0.1:50051", workers=2), tmp_path)


def test_render_envoy_cli_takes_workers(tmp_path: Path):
    out = tmp_path / "envoy.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "plano_extproc.cli", "render-envoy", "--config", str(DEMO_CONFIG), "--extproc", "unix:/run/p/x.sock",
         "--workers", "2", "-o", str(out)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "/run/p/x-1.sock" in out.read_text() and worker_cluster_name(1) in out.read_text()


# ---------------------------------------------------------------------------------------------- metrics


def _exposition(requests: dict[str, float], inflight: float, generation: float, store_up: float, latency: list[float]) -> str:
    r = CollectorRegistry()
    c = Counter("plano_requests", "requests", ["outcome"], registry=r)
    for outcome, n in requests.items():
        c.labels(outcome).inc(n)
    Gauge("plano_extproc_inflight_streams", "open", registry=r).set(inflight)
    Gauge("plano_config_generation", "gen", registry=r).set(generation)
    Gauge("plano_affinity_store_up", "up", ["backend"], registry=r).labels("memory").set(store_up)
    h = Histogram("plano_router_duration_seconds", "router", buckets=(0.01, 0.1), registry=r)
    for v in latency:
        h.observe(v)
    return generate_latest(r).decode()


def _value(merger: MetricsMerger, sample: str, **labels: str) -> float | None:
    for metric in merger.collect():
        for s in metric.samples:
            if s.name == sample and s.labels == labels:
                return s.value
    return None


def test_merged_metrics_sum_counters_and_pick_gauges():
    sources: list[tuple[str, str] | None] = [
        (_exposition({"ok": 3, "client_error": 1}, 2, 4, 1, [0.005, 0.05]), "100"),
        (_exposition({"ok": 5}, 1, 4, 0, [0.5]), "200"),
    ]
    merger = MetricsMerger(lambda: list(sources))
    assert _value(merger, "plano_requests_total", outcome="ok") == 8
    assert _value(merger, "plano_requests_total", outcome="client_error") == 1
    assert _value(merger, "plano_extproc_inflight_streams") == 3  # summed
    assert _value(merger, "plano_config_generation") == 4  # maxed
    assert _value(merger, "plano_affinity_store_up", backend="memory") == 0  # one store down: down
    assert _value(merger, "plano_router_duration_seconds_count") == 3
    assert _value(merger, "plano_router_duration_seconds_bucket", le="0.01") == 1
    assert _value(merger, "plano_router_duration_seconds_bucket", le="+Inf") == 3
    # the merged exposition is valid Prometheus text
    registry = CollectorRegistry()
    registry.register(merger)
    assert b"plano_requests_total{outcome=\"ok\"} 8.0" in generate_latest(registry)


def test_merged_counters_survive_a_worker_restart():
    sources: list[tuple[str, str] | None] = [(_exposition({"ok": 3}, 2, 1, 1, []), "100"), (_exposition({"ok": 5}, 1, 1, 1, []), "200")]
    merger = MetricsMerger(lambda: list(sources))
    assert _value(merger, "plano_requests_total", outcome="ok") == 8
    sources[1] = None  # worker 1 is down: its last counters stay, its gauges go
    assert _value(merger, "plano_requests_total", outcome="ok") == 8
    assert _value(merger, "plano_extproc_inflight_streams") == 2
    sources[1] = (_exposition({"ok": 1}, 0, 1, 1, []), "201")  # restarted: counts from zero again
    assert _value(merger, "plano_requests_total", outcome="ok") == 9  # never down
    sources[1] = (_exposition({"ok": 4}, 0, 1, 1, []), "201")
    assert _value(merger, "plano_requests_total", outcome="ok") == 12


def test_merged_metrics_with_the_supervisors_own():
    own = CollectorRegistry()
    Counter("plano_config_reloads", "reloads", ["result"], registry=own).labels("applied").inc()
    merger = MetricsMerger(lambda: [(_exposition({"ok": 1}, 0, 2, 1, []), "1")], lambda: generate_latest(own).decode())
    assert _value(merger, "plano_config_reloads_total", result="applied") == 1
    assert _value(merger, "plano_requests_total", outcome="ok") == 1


# ---------------------------------------------------------------------------------------------- sessions


@pytest.fixture
def session_file(tmp_path: Path) -> str:
    return str(tmp_path / "sessions.db")


async def test_the_first_decision_wins_across_stores_of_one_file(session_file):
    now = [1000.0]
    a, b = SqliteSessionStore(session_file, 100, clock=lambda: now[0]), SqliteSessionStore(session_file, 100, clock=lambda: now[0])
    first, second = AffinityEntry(("anthropic/claude",), "code"), AffinityEntry(("openai/gpt-4o",), None)
    assert await a.pin("k", first, 10) is None
    assert await b.pin("k", second, 10) == first  # the second worker answers with the first decision
    assert await b.get("k") == first and a.entries() == b.entries() == 1
    assert (a.stats.stored, b.stats.conflicts, b.stats.hits) == (1, 1, 1)
    now[0] += 9
    assert await a.get("k") == first  # a hit does not extend the pin ...
    now[0] += 1
    assert await b.get("k") is None  # ... which lives 10 s from the first decision
    assert await b.pin("k", second, 10) is None and await a.get("k") == second
    await b.replace("k", first, 10)
    assert await a.get("k") == first
    await a.close()
    await b.close()


async def test_the_session_file_is_bounded_least_recently_used_first(session_file):
    now = [0.0]
    store = SqliteSessionStore(session_file, 3, clock=lambda: now[0])
    for key in "abc":
        now[0] += 1
        await store.pin(key, AffinityEntry((key,), None), 600)
    now[0] += 1
    assert await store.get("a") is not None  # a is used again: b is now the oldest
    await store.pin("d", AffinityEntry(("d",), None), 600)
    assert store.entries() == 3 and store.stats.evictions == 1
    assert await store.get("b") is None and await store.get("a") is not None
    store.resize(1)
    await store.pin("e", AffinityEntry(("e",), None), 600)
    assert store.entries() == 1 and await store.get("e") is not None
    await store.close()


async def test_a_failing_session_file_is_fail_open(session_file):
    store = SqliteSessionStore(session_file, 10)
    store._db.close()  # every call fails now
    assert await store.get("k") is None
    assert await store.pin("k", AffinityEntry(("m",), None), 10) is None
    assert store.stats.available is False and sum(store.stats.errors.values()) == 2 and store.entries() is None


_RACER = """
import asyncio, json, sys
from plano_extproc.affinity import AffinityEntry
from plano_extproc.session_sqlite import SqliteSessionStore
store = SqliteSessionStore(sys.argv[1], 10000)
me = sys.argv[2]
async def main():
    out = {}
    for i in range(300):
        held = await store.pin(f"s{i}", AffinityEntry((me,), None), 600)
        out[f"s{i}"] = held.models[0] if held else me
    print(json.dumps(out))
asyncio.run(main())
"""


def test_worker_processes_racing_for_new_sessions_agree(session_file):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")])}
    SqliteSessionStore(session_file, 10000)  # the schema, as the first worker makes it
    racers = [subprocess.Popen([sys.executable, "-c", _RACER, session_file, name], stdout=subprocess.PIPE, text=True, env=env) for name in ("w0", "w1", "w2")]
    answers = [json.loads(p.communicate(timeout=60)[0]) for p in racers]
    assert all(p.returncode == 0 for p in racers)
    for key in answers[0]:
        assert len({a[key] for a in answers}) == 1, key  # every process answered the session with one model


def test_workers_opening_a_new_session_file_together_all_start(tmp_path: Path):
    # the workers of a gateway start at once; switching a new file to WAL could answer "database is
    # locked" at once to all but one of them, and that worker's start-up failed (a red CI run)
    ctx = multiprocessing.get_context("spawn")  # not fork: this process runs grpc threads
    with ctx.Pool(6) as pool, ctx.Manager() as manager:
        for round_ in range(20):
            barrier = manager.Barrier(6)
            path = str(tmp_path / f"sessions-{round_}.db")
            assert pool.starmap(open_store_at, [(path, barrier)] * 6) == ["ok"] * 6


# ---------------------------------------------------------------------------------------------- processors


@pytest.fixture
async def worker_one():
    async with serving(demo_config(), "extproc-1.sock", worker=1, workers=2) as served:
        yield served


def _open(served: Served, processor: str, workers: str | None) -> Any:
    metadata = [("x-plano-processor", processor), ("x-plano-config", served.fingerprint)]
    if workers is not None:
        metadata.append((WORKERS_METADATA, workers))
    return served.stub.Process(metadata=tuple(metadata), timeout=10)


async def test_a_worker_names_itself_on_every_forwarded_request(worker_one):
    raw = client_body("openai_chat", "complex_reasoning: trains")
    call = _open(worker_one, "downstream", "2")
    await call.write(request_headers_msg(client_headers("/v1/chat/completions", raw, "req-w1", {WORKER_HEADER: "0"})))
    headers_reply = await call.read()
    await call.write(request_body_msg(raw))
    body_reply = await call.read()
    await call.done_writing()
    # the client's value is removed, the worker's own set with the decision, and written as metadata
    assert WORKER_HEADER in list(headers_reply.request_headers.response.header_mutation.remove_headers)
    assert set_headers(body_reply)[WORKER_HEADER] == "1"
    fields = envoy_metadata(body_reply).filter_metadata[METADATA_NAMESPACE].fields
    assert fields[WORKER_KEY].string_value == "1"


@pytest.mark.parametrize("workers", [None, "3"], ids=["one-process-bootstrap", "three-worker-bootstrap"])
@pytest.mark.parametrize("processor", ["downstream", "upstream", "translate"])
async def test_a_worker_refuses_streams_of_a_bootstrap_for_another_number_of_workers(worker_one, processor, workers):
    call = _open(worker_one, processor, workers)
    await call.write(first_message(processor, "openai_chat"))
    reply = await call.read()
    await call.done_writing()
    answer = immediate_of(reply)
    assert answer.status == 503 and "another number of ext_proc workers" in json.dumps(answer.body)
    assert worker_one.sample("plano_config_mismatch_total") == 1


# ---------------------------------------------------------------------------------------------- serve --workers


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _metrics(port: int) -> dict[tuple[str, tuple], float]:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples}


def _decide(address: str, text: str) -> routing_pb2.DecideResponse:
    async def call() -> routing_pb2.DecideResponse:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = routing_pb2_grpc.RoutingServiceStub(channel)
            body = json.dumps({"messages": [{"role": "user", "content": text}]}).encode()
            return await stub.Decide(routing_pb2.DecideRequest(api="openai_chat", body=body), timeout=10)

    return asyncio.run(call())


def test_serve_with_workers_reloads_all_of_them_restarts_one_and_cleans_up(tmp_path: Path):
    directory = Path(tempfile.mkdtemp(prefix="plano-", dir="/tmp"))
    work = directory / "work"
    work.mkdir()
    config = directory / "config.yaml"
    config.write_text(DEMO_CONFIG.read_text())
    port = _free_port()
    env = {**os.environ, "OPENAI_API_KEY": "k", "ANTHROPIC_API_KEY": "k",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")])}
    serve = subprocess.Popen(
        [sys.executable, "-m", "plano_extproc.cli", "serve", "--config", str(config), "--listen", f"unix:{directory}/x.sock", "--workers", "2",
         "--metrics", f"127.0.0.1:{port}", "--watch-interval", "0.1", "--work-dir", str(work), "--log-format", "text", "--log-level", "info"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(iter(serve.stdout.readline, "")), daemon=True).start()
    addresses = [f"unix:{directory}/x-{k}.sock" for k in range(2)]
    try:
        _wait(lambda: any("serving ext_proc" in line for line in lines) or serve.poll() is not None, 90, "serve to start")
        assert serve.poll() is None, "".join(lines)
        assert all(_decide(a, "Write a Python function that implements binary search").route == "code_generation" for a in addresses)

        # a valid new version: both workers serve it (generation 2), counted once
        config.write_text(DEMO_CONFIG.read_text().replace("name: code_generation", "name: coding"))
        _wait(lambda: all(_decide(a, "Write a Python function that implements binary search").route == "coding" for a in addresses), 30, "the reload")
        _wait(lambda: _metrics(port).get(("plano_config_reloads_total", (("result", "applied"),))) == 1, 30, "the reload to be counted")
        assert _metrics(port)[("plano_config_generation", ())] == 2
        # an invalid one: refused, both keep version 2
        config.write_text(DEMO_CONFIG.read_text().replace("routing:\n", "routing:\n  session_tll: 5\n"))
        _wait(lambda: _metrics(port).get(("plano_config_reloads_total", (("result", "invalid"),))) == 1, 30, "the invalid version")
        assert all(_decide(a, "Write a Python function that implements binary search").route == "coding" for a in addresses)

        # a killed worker comes back on its address, with version 2
        (supervisor_dir,) = list(work.iterdir())
        pid = json.loads((supervisor_dir / "worker-1.json").read_text())["parent_pid"]
        assert pid == serve.pid
        workers = subprocess.run(["ps", "-ww", "-o", "pid=,args=", "--ppid", str(serve.pid)], capture_output=True, text=True).stdout.splitlines()
        victim = next(int(line.split()[0]) for line in workers if "worker-1.json" in line)
        os.kill(victim, signal.SIGKILL)
        _wait(lambda: _metrics(port).get(("plano_extproc_worker_restarts_total", (("worker", "1"),))) == 1, 30, "the restart to be counted")

        def back() -> bool:
            try:
                return _decide(addresses[1], "Write a Python function that implements binary search").route == "coding"
            except grpc.aio.AioRpcError:
                return False

        _wait(back, 30, "worker 1 to serve again")
    finally:
        status = stop_process(serve)
        left = list(work.iterdir())
        shutil.rmtree(directory, ignore_errors=True)
    assert status == 0, "".join(lines[-20:])
    assert left == []  # the supervisor's directory is gone
    assert not any("Traceback" in line for line in lines), "".join(lines)


def _free_port() -> int:
    from plano_devtools.local import free_port

    return free_port()


@pytest.mark.parametrize("argv", [
    ["serve", "--worker-max-rss-mib", "900"],
    ["serve", "--workers", "1", "--worker-max-rss-mib", "900"],
    ["up", "--workers", "1", "--worker-max-rss-mib", "900"],
])
def test_a_worker_memory_limit_without_a_second_worker_is_one_clear_error(argv, capsys):
    from plano_extproc.cli import main

    assert main([*argv, "--config", str(DEMO_CONFIG)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{argv[0]}: --worker-max-rss-mib needs --workers 2 or more: a worker is replaced only while another serves"]


def test_a_worker_memory_limit_must_be_a_positive_number(capsys):
    from plano_extproc.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["serve", "--config", str(DEMO_CONFIG), "--workers", "2", "--worker-max-rss-mib", "0"])
    assert exc.value.code == 2 and "--worker-max-rss-mib: must be more than 0" in capsys.readouterr().err


def test_an_ext_proc_process_keeps_its_imports_out_of_full_collections() -> None:
    """Every ext_proc process (`serve`, each worker) runs through run_event_loop. What it imported by then
    (~47,000 objects) lives as long as the process; if full garbage collections walked it, each would
    stop every request for 30-65 ms. Inside the loop a full collection walks only what was made since,
    and an object built there (a config's parts, which reloads retire) is still collected."""
    script = r"""
import gc, json, sys
from plano_extproc.extproc.server import run_event_loop

class Cycle:
    def __init__(self):
        self.me = self

async def main() -> int:
    gc.collect()
    import weakref
    probe = Cycle()
    gone = weakref.ref(probe)
    del probe
    gc.collect()
    print(json.dumps({"frozen": gc.get_freeze_count(), "walked": len(gc.get_objects()), "cycle_collected": gone() is None}))
    return 0

sys.exit(run_event_loop(main()))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["frozen"] > 20_000
    assert seen["walked"] < seen["frozen"] / 4
    assert seen["cycle_collected"]


def test_every_worker_over_the_memory_limit_is_replaced_in_turn_not_the_largest_again_and_again():
    # worker 1 was replaced a moment ago and, warming up under load, is already the largest of the two
    assert next_to_recycle([229.0, 240.0], started_at=[100.0, 900.0], limit_mib=1.0) == (0, 229.0)
    assert next_to_recycle([229.0, 240.0], started_at=[950.0, 900.0], limit_mib=1.0) == (1, 240.0)
    # only those over the limit, and never one that is not running
    assert next_to_recycle([229.0, 600.0], started_at=[100.0, 900.0], limit_mib=512.0) == (1, 600.0)
    assert next_to_recycle([None, 300.0], started_at=[100.0, 900.0], limit_mib=512.0) is None
