"""`plano-extproc demo`: the README's main job. Starts the whole gateway on the demo config with the
embedded router and local mock providers, sends the seed demo requests through Envoy, prints what was
decided and who answered, and stops everything.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

from plano_devtools.local import LocalGateway, free_port

CODE = "Write a Python function that implements binary search"
REASONING = (
    "Solve this step by step: a train leaves at 3pm at 60 mph and another at 4pm at 80 mph; "
    "when does the second catch up, and why?"
)
FRANCE = "What is the capital of France?"
SESSION = "demo-session-1"

#: (label, path, body, extra headers)
DECISIONS: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
    ("code generation", "/routing/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": CODE}]}, {}),
    ("complex reasoning", "/routing/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": REASONING}]}, {}),
    ("capital of France", "/routing/v1/chat/completions", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": FRANCE}]}, {}),
    (
        "Anthropic format",
        "/routing/v1/messages",
        {"model": "claude-sonnet-4-20250514", "max_tokens": 256, "system": "You are terse.", "messages": [{"role": "user", "content": CODE}]},
        {},
    ),
    ("Responses format", "/routing/v1/responses", {"model": "gpt-4o-mini", "instructions": "Be brief.", "input": REASONING}, {}),
    (
        "inline policy",
        "/routing/v1/chat/completions",
        {
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "Translate 'good morning' into Italian"}],
            "routing_preferences": [
                {"name": "translation", "description": "translating text between languages", "models": ["openai/gpt-4o"]},
                {"name": "code", "description": "writing code", "models": ["anthropic/claude-sonnet-4-20250514"]},
            ],
        },
        {},
    ),
    ("affinity: first", "/routing/v1/chat/completions", {"messages": [{"role": "user", "content": CODE}]}, {"X-Model-Affinity": SESSION}),
    ("affinity: pinned", "/routing/v1/chat/completions", {"messages": [{"role": "user", "content": FRANCE}]}, {"X-Model-Affinity": SESSION}),
]


def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), method="POST", headers={"content-type": "application/json", **headers}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - loopback
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _describe(decision: dict[str, Any]) -> str:
    route = decision.get("route") or "(no route)"
    extra = f"  session={decision['session_id']} pinned={decision['pinned']}" if "session_id" in decision else ""
    return f"route={route:<18} models={','.join(decision['models'])}  source={decision['source']}{extra}"


async def run_demo(config_text: str, port: int | None = None) -> int:
    gateway = LocalGateway(config_text, env={}, mock_providers=True, listener_port=port or free_port())
    async with gateway:
        print(f"gateway up on {gateway.url} (Envoy + ext_proc + embedded router + mock providers)\n")
        print("Decisions (POST /routing/v1/...):")
        failures = 0
        for label, path, body, headers in DECISIONS:
            status, decision = await asyncio.to_thread(_post, gateway.url + path, body, headers)
            if status != 200:
                failures += 1
                print(f"  {label:<18} HTTP {status}: {decision}")
                continue
            print(f"  {label:<18} {_describe(decision)}")

        print("\nProxied (POST /v1/chat/completions), first model's provider answers 429 once:")
        gateway.mocks["anthropic"].fail_next(status=429)
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": CODE}]}
        status, reply = await asyncio.to_thread(_post, gateway.url + "/v1/chat/completions", body, {})
        # the route's first model is Claude: its provider got the 429, the next model's provider answered
        tried = [f"{name}:{r['body'].get('model')}" for name in ("anthropic", "openai") for r in gateway.mocks[name].requests_snapshot()]
        if status == 200:
            print(f"  answered: {reply['choices'][0]['message']['content']!r}  (attempts: {' -> '.join(tried)})")
        else:
            failures += 1
            print(f"  HTTP {status}: {reply}")
    print("\nstopped Envoy, ext_proc and mock providers")
    return 1 if failures else 0
