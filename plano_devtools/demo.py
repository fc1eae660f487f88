"""`plano-extproc demo`: the README's main job. Starts the whole gateway on the demo config with the
embedded router and local mock providers, sends the seed's own requests (plano_devtools/seed_requests.json,
verbatim: plano's routing-service demo and README, its routing-API doc and LLM-router guide) through Envoy,
prints each prompt with its decision and whether that is what the seed shows, then one proxied call whose
first provider answers 429, and stops everything.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from plano_devtools.local import LocalGateway, free_port

SEED_REQUESTS = Path(__file__).with_name("seed_requests.json")
CODE = "Write a Python function that implements binary search"


def seed_requests() -> list[dict[str, Any]]:
    return json.loads(SEED_REQUESTS.read_text())["requests"]


def _accepted_today(body: dict[str, Any]) -> bool:
    """False for the seed requests whose inline routes carry `selection_policy` (plano ranks a route's
    models by live cost/latency): the request parsers answer those with 400 until they accept the key."""
    return not any("selection_policy" in p for p in body.get("routing_preferences", ()))


#: (label, path, body, extra headers) of the seed requests the gateway accepts today (other tests replay
#: them against other router backends)
DECISIONS: list[tuple[str, str, dict[str, Any], dict[str, str]]] = [
    (c["label"], c["path"], c["body"], c.get("headers", {})) for c in seed_requests() if _accepted_today(c["body"])
]


def prompt_of(body: dict[str, Any]) -> str:
    """The user's words as the seed sends them (Chat / Messages `messages`, or Responses `input`)."""
    if isinstance(body.get("input"), str):
        return body["input"]
    content = body["messages"][-1]["content"]
    return content if isinstance(content, str) else " ".join(p.get("text", "") for p in content)


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
    errors, mismatches = 0, []
    async with gateway:
        print(f"gateway up on {gateway.url} (Envoy + ext_proc + embedded router + mock providers)\n")
        print("The seed's requests, verbatim (POST /routing/v1/...):")
        for case in seed_requests():
            status, decision = await asyncio.to_thread(_post, gateway.url + case["path"], case["body"], case.get("headers", {}))
            label = case["label"]
            if status != 200:
                errors += status >= 500
                mismatches.append(label)
                print(f"  {label:<18} HTTP {status}: {decision.get('error', decision)}")
            else:
                ok = decision.get("route") == case["expected_route"] and (not case.get("pinned_after") or decision.get("pinned"))
                if not ok:
                    mismatches.append(label)
                seed = "as the seed shows" if ok else f"the seed shows route={case['expected_route'] or '(no route)'}"
                print(f"  {label:<18} {_describe(decision)}   [{seed}]")
            print(f"      {case['path'].rsplit('/', 1)[-1]}: {prompt_of(case['body'])!r}")

        print("\nProxied (POST /v1/chat/completions), first model's provider answers 429 once:")
        gateway.mocks["anthropic"].fail_next(status=429)
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": CODE}]}
        status, reply = await asyncio.to_thread(_post, gateway.url + "/v1/chat/completions", body, {})
        # the route's first model is Claude: its provider got the 429, the next model's provider answered
        tried = [f"{name}:{r['body'].get('model')}" for name in ("anthropic", "openai") for r in gateway.mocks[name].requests_snapshot()]
        if status == 200:
            print(f"  answered: {reply['choices'][0]['message']['content']!r}  (attempts: {' -> '.join(tried)})")
        else:
            errors += 1
            print(f"  HTTP {status}: {reply}")
    total = len(seed_requests())
    print(f"\n{total - len(mismatches)} of {total} seed requests decided as the seed shows"
          + (f"; not yet: {', '.join(mismatches)}" if mismatches else ""))
    print("stopped Envoy, ext_proc and mock providers")
    # the unit tests assert the decisions; the demo fails only when the gateway itself failed
    return 1 if errors else 0
