#!/usr/bin/env python3
"""Two long requests through a real gateway with Envoy's production keepalive (issue 9, item 1).

    PYTHONPATH=$PWD .venv/bin/python bench/long_request.py                 # ~7 minutes
    PYTHONPATH=$PWD .venv/bin/python bench/long_request.py --answer-after 20 --gap 5   # a quick rehearsal

One `LocalGateway` (real Envoy + the ext_proc service + the local mock providers), Envoy pinging its
ext_proc connection every 30 s (the default), the demo config with a 900 s listener timeout and
`retry_policy: {on_timeout: {timeout: 600s}}` on every provider, so neither the route timeout nor the
per-attempt idle timeout ends a silent attempt. At the same time:

* **non-streaming**: `POST /v1/chat/completions` (gpt-4o-mini); the OpenAI mock holds its answer back
  `--answer-after` seconds (default 390 = 6.5 min);
* **streaming**: `POST /v1/messages` (Claude, `stream: true`); the Anthropic mock sends `--pieces` text
  deltas `--gap` seconds apart (default 7 × 60 s: 7 minutes with 60 s of silence between events).

Both must end with 200 and the whole answer (the mock's reply text, every piece in order). Prints what each
got, when, and exits non-zero if either failed.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from plano_devtools.local import LocalGateway, free_port  # noqa: E402

DEMO = ROOT / "plano_extproc" / "demo" / "config.yaml"
CLAUDE = "claude-sonnet-4-20250514"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def long_config(listener_timeout_s: int, attempt_idle_s: int) -> str:
    text = DEMO.read_text()
    assert "timeout: 30s" in text
    text = text.replace("timeout: 30s", f"timeout: {listener_timeout_s}s")
    policy = f"    retry_policy: {{on_timeout: {{timeout: {attempt_idle_s}s}}}}\n"
    out = []
    for line in text.splitlines(keepends=True):
        out.append(line)
        if line.startswith("    access_key: "):
            out.append(policy)
    return "".join(out)


def non_streaming(url: str, started: float) -> dict[str, Any]:
    body = {"model": "gpt-4o-mini", "messages": QUESTION}
    try:
        resp = httpx.post(url + "/v1/chat/completions", json=body, timeout=httpx.Timeout(1200.0))
    except httpx.HTTPError as exc:
        return {"ok": False, "error": repr(exc), "seconds": time.monotonic() - started}
    seconds = time.monotonic() - started
    try:
        text = resp.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        text = None
    return {"status": resp.status_code, "text": text, "seconds": seconds, "body": resp.text[:300]}


def streaming(url: str, started: float) -> dict[str, Any]:
    body = {"model": CLAUDE, "max_tokens": 64, "stream": True, "messages": QUESTION}
    events: list[tuple[float, str]] = []
    text = ""
    status = None
    try:
        with httpx.stream("POST", url + "/v1/messages", json=body, timeout=httpx.Timeout(1200.0)) as resp:
            status = resp.status_code
            for line in resp.iter_lines():
                if not line.startswith("data: "):
                    continue
                payload = json.loads(line[6:])
                events.append((time.monotonic() - started, payload.get("type", "?")))
                delta = payload.get("delta") or {}
                if payload.get("type") == "content_block_delta" and delta.get("type") == "text_delta":
                    text += delta["text"]
    except httpx.HTTPError as exc:
        return {"ok": False, "status": status, "error": repr(exc), "seconds": time.monotonic() - started, "events": events, "text": text}
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(events)]
    return {"status": status, "text": text, "seconds": time.monotonic() - started, "events": events, "max_gap": max(gaps, default=0.0)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answer-after", type=float, default=390.0, help="seconds the non-streamed answer is held back (default 390)")
    parser.add_argument("--gap", type=float, default=60.0, help="seconds of silence between streamed events (default 60)")
    parser.add_argument("--pieces", type=int, default=7, help="streamed text deltas (default 7: 7 gaps)")
    parser.add_argument("--keepalive", type=float, default=30.0, help="Envoy's ext_proc ping interval (default 30 s, production)")
    args = parser.parse_args(argv)

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    gateway = LocalGateway(long_config(900, 600), env={}, mock_providers=True, listener_port=free_port(), quiet=True,
                           extproc_keepalive_s=args.keepalive)
    asyncio.run_coroutine_threadsafe(gateway.start(), loop).result(120)
    try:
        openai_mock, anthropic_mock = gateway.mocks["openai"], gateway.mocks["anthropic"]
        openai_mock.answer_delay = args.answer_after
        words = [f"word{i}" for i in range(1, args.pieces + 1)]
        anthropic_mock.reply_text = lambda model: " ".join(words)  # one streamed piece per word
        anthropic_mock.chunk_delay = args.gap
        expected_stream = " ".join(words)
        expected_plain = openai_mock.reply_text("gpt-4o-mini")
        print(f"gateway {gateway.url}: Envoy pings the ext_proc every {args.keepalive:g} s; listener timeout 900 s, "
              f"per-attempt idle timeout 600 s", flush=True)
        print(f"non-streamed answer after {args.answer_after:g} s; stream of {args.pieces} pieces {args.gap:g} s apart", flush=True)

        results: dict[str, dict[str, Any]] = {}
        started = time.monotonic()
        threads = [
            threading.Thread(target=lambda: results.__setitem__("non_streaming", non_streaming(gateway.url, started))),
            threading.Thread(target=lambda: results.__setitem__("streaming", streaming(gateway.url, started))),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        plain, stream = results["non_streaming"], results["streaming"]
        plain_ok = plain.get("status") == 200 and plain.get("text") == expected_plain
        stream_ok = stream.get("status") == 200 and stream.get("text") == expected_stream and stream["events"][-1][1] == "message_stop"
        print(f"non-streaming: status {plain.get('status')} after {plain['seconds']:.1f} s, text {plain.get('text')!r} "
              f"-> {'OK' if plain_ok else 'FAILED ' + str(plain)}")
        print(f"streaming:     status {stream.get('status')} after {stream['seconds']:.1f} s, {len(stream.get('events', []))} events, "
              f"longest silence {stream.get('max_gap', 0):.1f} s, text {stream.get('text')!r} -> {'OK' if stream_ok else 'FAILED ' + str(stream)}")
        print("provider saw:", [r["path"] for r in openai_mock.requests_snapshot()], [r["path"] for r in anthropic_mock.requests_snapshot()])
        return 0 if plain_ok and stream_ok else 1
    finally:
        openai_mock.answer_delay = 0
        anthropic_mock.chunk_delay = 0
        asyncio.run_coroutine_threadsafe(gateway.stop(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)


if __name__ == "__main__":
    raise SystemExit(main())
