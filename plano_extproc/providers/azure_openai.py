"""Provider API: Azure OpenAI (`api-key` header, the deployment in the path, `api-version` in the query)."""

from __future__ import annotations

from plano_extproc.providers.base import Headers, Provider, ProviderApi
from plano_extproc.translation import Dialect
from plano_extproc.translation.openai_responses_to_openai_chat import ChatTarget


def _api_key(key: str) -> Headers:
    return (("api-key", key),)


AZURE_OPENAI = ProviderApi(name="azure_openai", auth=_api_key, native={"openai_chat": "/chat/completions"}, auth_header_names=("api-key",))

#: the api-version plano sends (hermesllm's Azure endpoint); a ``?api-version=...`` in base_url wins
AZURE_API_VERSION = "2025-01-01-preview"

PROVIDERS: dict[str, Provider] = {
    "azure_openai": Provider(
        AZURE_OPENAI,
        None,
        path_template={"openai_chat": "/openai/deployments/{model}/chat/completions"},
        default_query=f"api-version={AZURE_API_VERSION}",
        dialect=Dialect(ChatTarget(max_tokens_field="max_completion_tokens", openai_extensions=True)),
    ),
}
