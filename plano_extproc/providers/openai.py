"""Provider API: OpenAI (Chat Completions and Responses), and the vendors that speak its Chat Completions.

Bearer auth. Only OpenAI itself serves the Responses API; the OpenAI-compatible vendors serve Chat
Completions under their own version prefix.
"""

from __future__ import annotations

from plano_extproc.providers.base import Provider, ProviderApi, bearer

OPENAI = ProviderApi(
    name="openai",
    auth=bearer,
    native={"openai_chat": "/chat/completions", "openai_responses": "/responses"},
    feature_headers=("openai-beta",),
)
OPENAI_COMPATIBLE = ProviderApi(name="openai_compatible", auth=bearer, native={"openai_chat": "/chat/completions"})

#: provider name -> where it lives
PROVIDERS: dict[str, Provider] = {
    "openai": Provider(OPENAI, "api.openai.com"),
    "gemini": Provider(OPENAI_COMPATIBLE, "generativelanguage.googleapis.com", "/v1beta/openai"),
    "groq": Provider(OPENAI_COMPATIBLE, "api.groq.com", "/openai/v1"),
    "deepseek": Provider(OPENAI_COMPATIBLE, "api.deepseek.com"),
    "mistral": Provider(OPENAI_COMPATIBLE, "api.mistral.ai"),
    "xai": Provider(OPENAI_COMPATIBLE, "api.x.ai"),
    "together_ai": Provider(OPENAI_COMPATIBLE, "api.together.xyz"),
    "ollama": Provider(OPENAI_COMPATIBLE, None),
    "qwen": Provider(OPENAI_COMPATIBLE, None),
    "amazon_bedrock": Provider(OPENAI_COMPATIBLE, None),
    "openai_compatible": Provider(OPENAI_COMPATIBLE, None),
}
