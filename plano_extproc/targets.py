"""Where each declared model is sent for each client API format, precomputed once per config. Pure.

A target holds everything the per-attempt processor writes: the Host, the path, the auth headers, the
provider's model id. Client formats a provider cannot serve natively have no target (no API translation
yet): the proxy path skips those models.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from plano_extproc.config import PlanoConfig, ProviderConfig
from plano_extproc.formats import ApiFormat
from plano_extproc.providers import KNOWN_PROVIDERS, endpoint_for

ANTHROPIC_VERSION = "2023-06-01"
#: request headers that carry a client's credentials; never forwarded unless passthrough_auth
CREDENTIAL_HEADERS = ("authorization", "x-api-key", "api-key")

_SUFFIX = {
    ApiFormat.OPENAI_CHAT: "/chat/completions",
    ApiFormat.ANTHROPIC_MESSAGES: "/messages",
    ApiFormat.OPENAI_RESPONSES: "/responses",
}


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    model: str  # full declared name, "openai/gpt-4o"
    model_id: str  # what the provider calls it, "gpt-4o"
    host: str  # Host / :authority
    path: str
    headers: tuple[tuple[str, str], ...]  # auth + configured extra headers; secret values inside
    passthrough_auth: bool

    def __repr__(self) -> str:  # never print the auth headers
        return f"UpstreamTarget(model={self.model!r}, host={self.host!r}, path={self.path!r})"


def _path(provider: ProviderConfig, api_format: ApiFormat) -> str | None:
    facts = KNOWN_PROVIDERS.get(provider.interface) or KNOWN_PROVIDERS["openai_compatible"]
    native = {
        ApiFormat.OPENAI_CHAT: facts.chat_path,
        ApiFormat.ANTHROPIC_MESSAGES: facts.messages_path,
        ApiFormat.OPENAI_RESPONSES: facts.responses_path,
    }[api_format]
    if native is None:
        return None
    parts = urlsplit(provider.base_url) if provider.base_url else None
    base_path = parts.path.rstrip("/") if parts else ""
    if base_path:
        # An SDK-style base_url ("http://host/v1", "https://x/openai/v1") already holds the version prefix.
        path = base_path + _SUFFIX[api_format]
    else:
        path = native
    path = path.replace("{model}", provider.model_id)
    if parts and parts.query:
        path += "?" + parts.query
    return path


def _auth_headers(provider: ProviderConfig) -> list[tuple[str, str]]:
    key = provider.access_key.get_secret_value() if provider.access_key else None
    facts = KNOWN_PROVIDERS.get(provider.interface) or KNOWN_PROVIDERS["openai_compatible"]
    headers: list[tuple[str, str]] = []
    if facts.auth == "x-api-key":
        headers.append(("anthropic-version", ANTHROPIC_VERSION))
        if key:
            headers.append(("x-api-key", key))
    elif key:
        headers.append(("api-key", key) if facts.auth == "api-key" else ("authorization", f"Bearer {key}"))
    return headers


def build_targets(config: PlanoConfig) -> Mapping[tuple[ApiFormat, str], UpstreamTarget]:
    targets: dict[tuple[ApiFormat, str], UpstreamTarget] = {}
    for provider in config.providers:
        endpoint = endpoint_for(provider.interface, provider.base_url)
        host = endpoint.host_header(provider.http_host)
        headers = tuple(_auth_headers(provider) + [(k.lower(), v) for k, v in provider.headers.items()])
        for api_format in ApiFormat:
            path = _path(provider, api_format)
            if path is not None:
                targets[(api_format, provider.model)] = UpstreamTarget(
                    provider.model, provider.model_id, host, path, headers, provider.passthrough_auth
                )
    return targets


def stale_header_names(targets: Iterable[UpstreamTarget]) -> tuple[str, ...]:
    """Every header some provider's auth or configuration could have set, plus client credentials.

    Header mutations of attempt N persist into attempt N+1, so each attempt removes these before setting
    its own."""
    injected = {name for t in targets for name, _ in t.headers}
    return tuple(sorted(injected | set(CREDENTIAL_HEADERS)))


def attempt_headers(
    target: UpstreamTarget,
    present: Collection[str],
    stale: Iterable[str],
    client_credentials: Mapping[str, str] | None,
) -> tuple[list[tuple[str, str]], list[str]]:
    """(headers to set, headers to remove) so a request carries exactly `target`'s credentials."""
    if target.passthrough_auth and client_credentials:
        sets = list(client_credentials.items())  # the client's own credentials
    else:
        sets = list(target.headers)
    set_names = {k for k, _ in sets}
    return sets, [k for k in stale if k in present and k not in set_names]
