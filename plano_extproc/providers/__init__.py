"""The provider APIs this gateway calls: one module each, and this registry of provider names.

Adding a provider API (Bedrock Converse, Gemini's native API) is one module that defines a `ProviderApi`
and its providers, plus one line in `_MODULES`.
"""

from __future__ import annotations

from plano_extproc.providers import anthropic, azure_openai, openai
from plano_extproc.providers.base import Endpoint, Provider, ProviderApi, endpoint_of

_MODULES = (openai, anthropic, azure_openai)

PROVIDERS: dict[str, Provider] = {name: p for module in _MODULES for name, p in module.PROVIDERS.items()}
PROVIDER_APIS: tuple[ProviderApi, ...] = tuple(dict.fromkeys(p.api for p in PROVIDERS.values()))
#: what a provider name not listed here is taken to speak (with a base_url)
GENERIC = PROVIDERS["openai_compatible"]
#: every header name some provider API's auth sets
AUTH_HEADER_NAMES: tuple[str, ...] = tuple(sorted({h for api in PROVIDER_APIS for h in api.auth_header_names}))


def provider_named(name: str) -> Provider:
    return PROVIDERS.get(name) or GENERIC


def endpoint_for(provider: str, base_url: str | None) -> Endpoint:
    """The network endpoint of provider `provider`: its base_url when given, else its public API host."""
    return endpoint_of(provider_named(provider), base_url)


__all__ = ["AUTH_HEADER_NAMES", "PROVIDERS", "PROVIDER_APIS", "Endpoint", "Provider", "ProviderApi", "endpoint_for", "provider_named"]
