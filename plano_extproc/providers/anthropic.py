"""Provider API: Anthropic Messages (`x-api-key` + `anthropic-version`).

Only the native Messages API is used: OpenAI clients are translated to it (plano_extproc.translation)
rather than sent to Anthropic's OpenAI-compatible endpoint, which ignores prompt caching, thinking
signatures and parts of tool use.
"""

from __future__ import annotations

from plano_extproc.providers.base import Headers, Provider, ProviderApi

ANTHROPIC_VERSION = "2023-06-01"


def _x_api_key(key: str) -> Headers:
    return (("x-api-key", key),)


ANTHROPIC = ProviderApi(
    name="anthropic",
    auth=_x_api_key,
    native={"anthropic_messages": "/messages"},
    fixed_headers=(("anthropic-version", ANTHROPIC_VERSION),),
    auth_header_names=("x-api-key",),
    feature_headers=("anthropic-version", "anthropic-beta"),
)

PROVIDERS: dict[str, Provider] = {"anthropic": Provider(ANTHROPIC, "api.anthropic.com")}
