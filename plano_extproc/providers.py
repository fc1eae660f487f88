"""Per-provider upstream facts (DESIGN §5): where a provider lives, how it authenticates, which paths.

Pure data; the upstream processor and the Envoy renderer read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class ProviderFacts:
    host: str | None  # None: taken from base_url
    auth: str  # "bearer", "x-api-key", "api-key"
    chat_path: str  # OpenAI Chat Completions-compatible path
    messages_path: str | None = None  # native Anthropic Messages
    responses_path: str | None = None  # native OpenAI Responses


KNOWN_PROVIDERS: dict[str, ProviderFacts] = {
    "openai": ProviderFacts("api.openai.com", "bearer", "/v1/chat/completions", None, "/v1/responses"),
    "anthropic": ProviderFacts("api.anthropic.com", "x-api-key", "/v1/chat/completions", "/v1/messages"),
    "gemini": ProviderFacts("generativelanguage.googleapis.com", "bearer", "/v1beta/openai/chat/completions"),
    "groq": ProviderFacts("api.groq.com", "bearer", "/openai/v1/chat/completions"),
    "deepseek": ProviderFacts("api.deepseek.com", "bearer", "/v1/chat/completions"),
    "mistral": ProviderFacts("api.mistral.ai", "bearer", "/v1/chat/completions"),
    "xai": ProviderFacts("api.x.ai", "bearer", "/v1/chat/completions"),
    "together_ai": ProviderFacts("api.together.xyz", "bearer", "/v1/chat/completions"),
    "azure_openai": ProviderFacts(None, "api-key", "/openai/deployments/{model}/chat/completions"),
    "ollama": ProviderFacts(None, "bearer", "/v1/chat/completions"),
    "qwen": ProviderFacts(None, "bearer", "/v1/chat/completions"),
    "amazon_bedrock": ProviderFacts(None, "bearer", "/v1/chat/completions"),
    "openai_compatible": ProviderFacts(None, "bearer", "/v1/chat/completions"),
}

PROVIDERS_REQUIRING_BASE_URL = frozenset({"azure_openai", "ollama", "qwen", "amazon_bedrock"})


@dataclass(frozen=True, slots=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    path_prefix: str

    @property
    def tls(self) -> bool:
        return self.scheme == "https"

    def host_header(self, override: str | None = None) -> str:
        """The Host a provider expects: `override` (http_host), else host, with the port when not the default."""
        if override:
            return override
        return self.host if self.port == (443 if self.tls else 80) else f"{self.host}:{self.port}"


def endpoint_for(provider: str, base_url: str | None) -> Endpoint:
    """The network endpoint of a provider: its base_url when given, else its public API host over TLS."""
    if base_url:
        parts = urlsplit(base_url)
        scheme = parts.scheme
        port = parts.port or (443 if scheme == "https" else 80)
        return Endpoint(scheme, parts.hostname or "", port, parts.path.rstrip("/"))
    facts = KNOWN_PROVIDERS.get(provider) or KNOWN_PROVIDERS["openai_compatible"]
    if facts.host is None:
        raise ValueError(f"provider '{provider}' needs a base_url")
    return Endpoint("https", facts.host, 443, "")
