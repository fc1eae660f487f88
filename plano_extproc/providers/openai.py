"""Provider API: OpenAI (Chat Completions and Responses), and the vendors that speak its Chat Completions.

Bearer auth. Only OpenAI itself serves the Responses API; the OpenAI-compatible vendors serve Chat
Completions under their own version prefix.
"""

from __future__ import annotations

from plano_extproc.providers.base import Provider, ProviderApi, bearer
from plano_extproc.translation import Dialect
from plano_extproc.translation.openai_responses_to_openai_chat import ChatTarget

#: OpenAI's own chat endpoint: max_completion_tokens (reasoning models refuse max_tokens) and its
#: extensions (prompt_cache_key, user, service tier...)
_OPENAI_CHAT = Dialect(ChatTarget(max_tokens_field="max_completion_tokens", openai_extensions=True))
#: Mistral rejects stream_options (and reports usage in streams anyway)
_MISTRAL = Dialect(ChatTarget(stream_usage=False))

OPENAI = ProviderApi(
    name="openai",
    auth=bearer,
    native={"openai_chat": "/chat/completions", "openai_responses": "/responses"},
    feature_headers=("openai-beta",),
)
OPENAI_COMPATIBLE = ProviderApi(name="openai_compatible", auth=bearer, native={"openai_chat": "/chat/completions"})

#: provider name -> where it lives
PROVIDERS: dict[str, Provider] = {
    "openai": Provider(OPENAI, "api.openai.com", dialect=_OPENAI_CHAT),
    "gemini": Provider(OPENAI_COMPATIBLE, "generativelanguage.googleapis.com", "/v1beta/openai"),
    "groq": Provider(OPENAI_COMPATIBLE, "api.groq.com", "/openai/v1"),
    "deepseek": Provider(OPENAI_COMPATIBLE, "api.deepseek.com"),
    "mistral": Provider(OPENAI_COMPATIBLE, "api.mistral.ai", dialect=_MISTRAL),
    "xai": Provider(OPENAI_COMPATIBLE, "api.x.ai"),
    "together_ai": Provider(OPENAI_COMPATIBLE, "api.together.xyz"),
    # plano knows these too: DigitalOcean's serverless inference, Moonshot AI, OpenRouter
    "digitalocean": Provider(OPENAI_COMPATIBLE, "inference.do-ai.run"),
    "moonshotai": Provider(OPENAI_COMPATIBLE, "api.moonshot.ai"),
    "openrouter": Provider(OPENAI_COMPATIBLE, "openrouter.ai", "/api/v1"),
    "ollama": Provider(OPENAI_COMPATIBLE, None),
    "qwen": Provider(OPENAI_COMPATIBLE, None),
    "amazon_bedrock": Provider(OPENAI_COMPATIBLE, None),
    "openai_compatible": Provider(OPENAI_COMPATIBLE, None),
}
