"""API translation between client APIs and provider APIs: one module per client↔provider pair, and this
registry. Pure: dicts and bytes in, dicts and bytes out.

A `Translation` is everything the gateway needs for one pair: the request body, the JSON response, the
SSE stream and error bodies. Pairs without a module of their own are composed through OpenAI Chat
Completions (Responses → Anthropic = Responses → Chat → Anthropic). Adding a provider API (Bedrock
Converse, Gemini's native API) means one module per client API it should serve, plus lines in
`TRANSLATIONS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from plano_extproc.translation import anthropic_to_openai_chat as a2o
from plano_extproc.translation import openai_chat_to_anthropic as o2a
from plano_extproc.translation import openai_responses_to_openai_chat as r2c
from plano_extproc.translation.common import TranslationError
from plano_extproc.translation.openai_responses_to_openai_chat import ChatTarget

Json = dict[str, Any]


class StreamTranslator(Protocol):
    def feed(self, chunk: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Dialect:
    """What a provider's implementation of its API accepts beyond the portable core."""

    chat: ChatTarget = field(default_factory=ChatTarget)


@dataclass(frozen=True, slots=True, eq=False)
class Translation:
    client: str  # client API name
    provider: str  # the provider API name the request is sent in
    #: (client body, provider model id, dialect) -> provider body
    request: Callable[[Json, str, Dialect], Json]
    #: (provider JSON body, the model name the client sees, client body) -> client JSON body
    response: Callable[[Json, str, Json], Json]
    #: (the model name the client sees, client body) -> provider SSE bytes in, client SSE bytes out
    stream: Callable[[str, Json], StreamTranslator]
    #: (status, provider error body) -> client error body
    error: Callable[[int, bytes], bytes]

    def __repr__(self) -> str:
        return f"Translation({self.client} -> {self.provider})"


class _Chained:
    """Two stream translators back to back (provider → Chat → client)."""

    __slots__ = ("_first", "_second")

    def __init__(self, first: StreamTranslator, second: StreamTranslator) -> None:
        self._first, self._second = first, second

    def feed(self, chunk: bytes) -> bytes:
        return self._second.feed(self._first.feed(chunk))

    def finish(self) -> bytes:
        return self._second.feed(self._first.finish()) + self._second.finish()


CHAT_TO_ANTHROPIC = Translation(
    "openai_chat",
    "anthropic_messages",
    request=lambda body, model_id, _dialect: o2a.translate_request(body, model_id=model_id),
    response=lambda body, model, _client: o2a.translate_response(body, client_model=model),
    stream=lambda model, client: o2a.StreamTranslator.for_request(client, client_model=model),
    error=o2a.translate_error,
)

ANTHROPIC_TO_CHAT = Translation(
    "anthropic_messages",
    "openai_chat",
    request=lambda body, model_id, _dialect: a2o.translate_request(body, model_id=model_id),
    response=lambda body, model, client: a2o.translate_response(body, client_model=model, tool_names=a2o.tool_name_map(client)),
    stream=lambda model, client: a2o.StreamTranslator(client_model=model, tool_names=a2o.tool_name_map(client)),
    error=a2o.translate_error,
)

RESPONSES_TO_CHAT = Translation(
    "openai_responses",
    "openai_chat",
    request=lambda body, model_id, dialect: r2c.translate_request(body, model_id=model_id, target=dialect.chat),
    response=lambda body, model, client: r2c.translate_response(body, client_model=model, request=client),
    stream=lambda model, client: r2c.StreamTranslator(client_model=model, request=client),
    error=r2c.translate_error,
)


def _responses_to_anthropic_request(body: Json, model_id: str, _dialect: Dialect) -> Json:
    # Anthropic reads max_tokens; usage always arrives in its stream
    chat = r2c.translate_request(body, model_id=model_id, target=ChatTarget(max_tokens_field="max_tokens", stream_usage=True))
    return o2a.translate_request(chat, model_id=model_id)


RESPONSES_TO_ANTHROPIC = Translation(
    "openai_responses",
    "anthropic_messages",
    request=_responses_to_anthropic_request,
    response=lambda body, model, client: r2c.translate_response(o2a.translate_response(body, client_model=model), client_model=model, request=client),
    stream=lambda model, client: _Chained(
        o2a.StreamTranslator(client_model=model, include_usage=True), r2c.StreamTranslator(client_model=model, request=client)
    ),
    error=lambda status, body: r2c.translate_error(status, o2a.translate_error(status, body)),
)

#: (client API name, provider API name) -> translation
TRANSLATIONS: dict[tuple[str, str], Translation] = {
    (t.client, t.provider): t for t in (CHAT_TO_ANTHROPIC, ANTHROPIC_TO_CHAT, RESPONSES_TO_CHAT, RESPONSES_TO_ANTHROPIC)
}

__all__ = ["TRANSLATIONS", "Dialect", "StreamTranslator", "Translation", "TranslationError"]
