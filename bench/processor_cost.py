"""CPU per request of the ext_proc's own Python, in-process (no gRPC, no Envoy), two source trees side by side.

What the sidecar benchmark cannot separate from grpc.aio's machinery: one proxied (3a) request through
`ExternalProcessor.Process` (the routing processor's two messages, as Envoy sends them), and the two
access-log entries Envoy writes for it (the request's and its attempt's). The config is
bench/configs/proxy-noroutes.yaml (decided by `model`, no router call). Each tree runs in its own
process (`python -P`, the tree first on sys.path); the trees alternate, and the table shows each one's
best round (CPU time: process_time over N requests).

    .venv/bin/python bench/processor_cost.py --baseline /tmp/base-tree --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
CONFIG = BENCH / "configs" / "proxy-noroutes.yaml"
MODEL = "openai/gpt-4o-mini"


def _headers(raw: bytes, request_id: str) -> Any:
    from envoy.config.core.v3 import base_pb2
    from envoy.service.ext_proc.v3 import external_processor_pb2 as ext

    headers = {
        ":method": "POST", ":scheme": "http", ":authority": "127.0.0.1:12000", ":path": "/v1/chat/completions",
        "content-type": "application/json", "content-length": str(len(raw)), "user-agent": "OpenAI/Python 1.60.0",
        "accept": "application/json", "authorization": "Bearer client", "x-request-id": request_id,
        "x-forwarded-proto": "http", "x-envoy-expected-rq-timeout-ms": "30000",
    }
    entries = [base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()]
    return ext.ProcessingRequest(request_headers=ext.HttpHeaders(headers=base_pb2.HeaderMap(headers=entries)))


async def _measure(n: int) -> dict[str, float]:
    import orjson
    from envoy.config.core.v3 import base_pb2
    from envoy.data.accesslog.v3 import accesslog_pb2 as als_data
    from envoy.service.ext_proc.v3 import external_processor_pb2 as ext
    from google.protobuf import struct_pb2

    from plano_extproc.config import parse_config
    from plano_extproc.contract import FINGERPRINT_METADATA, GRACEFUL_CLOSE_METADATA, PROCESSOR_METADATA, USAGE_NAMESPACE, Processor, model_cluster_name
    from plano_extproc.extproc.server import ExtProcServer

    config = parse_config(CONFIG.read_text(), os.environ)
    server = ExtProcServer(config, f"unix:/tmp/plano-processor-cost-{os.getpid()}.sock", None)
    metadata = ((PROCESSOR_METADATA, Processor.DOWNSTREAM.value), (FINGERPRINT_METADATA, server.fingerprint), (GRACEFUL_CLOSE_METADATA, "1"))

    class Context:
        def invocation_metadata(self) -> Any:
            return metadata

    def request(i: int) -> tuple[Any, Any]:
        raw = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"Write a Python function for binary search, take {i}"}]})
        return _headers(raw, f"req-{i}"), ext.ProcessingRequest(request_body=ext.HttpBody(body=raw, end_of_stream=True))

    async def stream(messages: tuple[Any, Any]) -> Any:
        async def incoming() -> Any:
            for m in messages:
                yield m
        last = None
        async for reply in server.processor.Process(incoming(), Context()):
            last = reply
        return last

    requests = [request(i) for i in range(n + 200)]
    replies = [await stream(r) for r in requests[:200]]  # warm-up; the reply carries the decision metadata
    t = time.process_time()
    for r in requests[200:]:
        await stream(r)
    processor_us = (time.process_time() - t) / n * 1e6

    decision = base_pb2.Metadata()
    for key, value in replies[-1].dynamic_metadata.fields.items():
        decision.filter_metadata[key].CopyFrom(value.struct_value)
    usage = struct_pb2.Struct()
    usage.update({"prompt_tokens": 14, "completion_tokens": 72})

    def entries(i: int) -> tuple[Any, Any]:
        req = als_data.HTTPAccessLogEntry()
        common = req.common_properties
        common.metadata.CopyFrom(decision)
        common.metadata.filter_metadata[USAGE_NAMESPACE].CopyFrom(usage)
        common.upstream_request_attempt_count = 1
        common.time_to_first_upstream_rx_byte.FromNanoseconds(400_000)
        common.time_to_last_downstream_tx_byte.FromNanoseconds(600_000)
        common.duration.FromNanoseconds(600_000)
        req.request.request_id = f"req-{i}"
        req.response.response_code.value = 200
        req.response.response_body_bytes = 300
        attempt = als_data.HTTPAccessLogEntry()
        attempt.common_properties.upstream_cluster = model_cluster_name(MODEL)
        attempt.request.request_id = f"req-{i}"
        attempt.response.response_code.value = 200
        return req, attempt

    context = server._access_log_context(server.fingerprint)
    assert context is not None
    logged = [entries(i) for i in range(n)]
    t = time.process_time()
    for req, attempt in logged:
        context.request_entry(req)
        context.attempt_entry(attempt)
    access_log_us = (time.process_time() - t) / n * 1e6
    tokens = server.metrics.registry.get_sample_value("plano_tokens_total", {"model": MODEL, "type": "input"})
    assert tokens == 14 * n, f"the access-log entries were not recorded ({tokens})"
    return {"processor_us": processor_us, "access_log_us": access_log_us}


def run_tree(tree: Path, n: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-P", __file__, "--child", str(n)], capture_output=True, text=True, env=env, timeout=600, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{tree}: {out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", metavar="DIR", help="also measure the plano_extproc source tree in DIR (e.g. a git worktree)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-n", type=int, default=20000, help="requests per round (default 20000)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_measure(args.child))))
        return 0
    trees = {"this tree": ROOT, **({"baseline": Path(args.baseline)} if args.baseline else {})}
    best: dict[str, dict[str, float]] = {}
    for i in range(args.rounds):
        for name, tree in (trees.items() if i % 2 == 0 else reversed(trees.items())):
            result = run_tree(tree, args.n)
            print(f"  round {i + 1} {name:9}  processor {result['processor_us']:6.1f} us  access log {result['access_log_us']:5.1f} us", flush=True)
            best[name] = {k: min(v, best.get(name, {}).get(k, v)) for k, v in result.items()}
    print("\n| tree | routing processor, one proxied request (2 messages) | access-log entries of one request | total |")
    print("|---|---:|---:|---:|")
    for name, r in best.items():
        print(f"| {name} | {r['processor_us']:.1f} us | {r['access_log_us']:.1f} us | {r['processor_us'] + r['access_log_us']:.1f} us |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
