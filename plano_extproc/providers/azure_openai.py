"""Provider API: Azure OpenAI (`api-key` header, the deployment in the path, `api-version` in the query)."""

from __future__ import annotations

from plano_extproc.providers.base import Headers, Provider, ProviderApi
from plano_extproc.translation import Dialect
from plano_extproc.translation.openai_responses_to_openai_chat import ChatTarget


def _api_key(key: str) -> Headers:
    return (("api-key", key),)


AZURE_OPENAI = ProviderApi(name="azure_openai", auth=_api_key, native={"openai_chat": "/chat/completions"}, auth_header_names=("api-key",))

PROVIDERS: dict[str, Provider] = {
    "azure_openai": Provider(
        AZURE_OPENAI,
        None,
        path_template={"openai_chat": "/openai/deployments/{model}/chat/completions"},
        dialect=Dialect(ChatTarget(max_tokens_field="max_completion_tokens", openai_extensions=True)),
    ),
}
