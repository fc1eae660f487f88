"""Arch-Router behind an OpenAI-compatible chat endpoint (vLLM, Ollama, Triton's OpenAI frontend, ...).

`routing.router: {backend: openai, url: http://host:8000, model: katanemo/Arch-Router-1.5B}` - `url` is
the server's base URL, with or without a trailing `/v1`. The Arch-Router prompt goes as one user message
(the server applies the model's chat template); temperature ~0.01, a small `max_tokens`; the reply's
message content is parsed with the shared parser. One pooled httpx.AsyncClient for the process.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import httpx

from plano_extproc.config import RouterConfig
from plano_extproc.conversation import Turn
from plano_extproc.router.base import RouterBackend, RouterError, RouteSpec
from plano_extproc.router.prompt import build_router_prompt, parse_router_reply

log = logging.getLogger(__name__)

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_MODEL = "katanemo/Arch-Router-1.5B"


def api_base(url: str) -> str:
    """`.../v1` for a base URL given with or without it."""
    base = url.rstrip("/")
    return base if base.endswith("/v1") else base + "/v1"


class OpenAICompatibleRouter(RouterBackend):
    name = "openai"

    def __init__(self, settings: RouterConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.settings = settings
        self.base = api_base(settings.url or DEFAULT_URL)
        self.model = settings.model or DEFAULT_MODEL
        if not settings.url or not settings.model:
            log.warning("routing.router (openai): url/model not set; using %s / %s", self.base, self.model)
        key = settings.openai.api_key.get_secret_value() if settings.openai.api_key else None
        self._headers = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
        self._timeout = settings.timeout_ms / 1000.0
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self.calls = 0

    def _get_client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self.base,
                headers=self._headers,
                timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 5.0)),
                limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
                transport=self._transport,
            )
        return self._client

    def request_body(self, prompt: str) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.settings.openai.temperature,
            "max_tokens": self.settings.openai.max_tokens,
            "stream": False,
        }

    async def choose_route(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn]) -> str | None:
        if not routes or not conversation:
            return None
        prompt = build_router_prompt(routes, conversation, self.settings.prompt_max_tokens)
        try:
            resp = await self._get_client().post("/chat/completions", json=self.request_body(prompt))
        except httpx.TimeoutException as exc:
            raise RouterError("timeout", f"openai router {self.base}: {type(exc).__name__}") from None
        except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            raise RouterError("unavailable", f"openai router {self.base}: {type(exc).__name__}: {exc}") from None
        except httpx.HTTPError as exc:
            raise RouterError("error", f"openai router {self.base}: {type(exc).__name__}: {exc}") from None
        self.calls += 1
        if resp.status_code in (502, 503, 504):
            raise RouterError("unavailable", f"openai router {self.base}: HTTP {resp.status_code}")
        if resp.status_code != 200:
            raise RouterError("error", f"openai router {self.base}: HTTP {resp.status_code}: {resp.text[:200]}")
        try:
            content = resp.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise RouterError("bad_reply", f"openai router {self.base}: not a chat completion: {resp.text[:120]!r}") from None
        return parse_router_reply(content or "", frozenset(r.name for r in routes))

    async def ready(self) -> bool:
        """The server answers `GET /v1/models` (any non-5xx status: some servers guard it with auth)."""
        try:
            resp = await self._get_client().get("/models")
        except httpx.HTTPError:
            return False
        return resp.status_code < 500

    async def warm_up(self, routes: Sequence[RouteSpec]) -> None:  # noqa: ARG002 - nothing to embed remotely
        if not await self.ready():
            log.warning("openai router %s not reachable at start-up; fallback until it is", self.base)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
