"""The client APIs this gateway serves: one module each, and this registry.

Adding a client API is one module that defines a `ClientApi` and one line in `CLIENT_APIS`; endpoints,
error shapes, provider paths, the CLI's `--format` and the gRPC `api` field follow from it.
"""

from __future__ import annotations

from plano_extproc.apis.anthropic_messages import ANTHROPIC_MESSAGES
from plano_extproc.apis.base import ClientApi, InlinePreference, ParsedRequest, RequestFormatError
from plano_extproc.apis.openai_chat import OPENAI_CHAT
from plano_extproc.apis.openai_responses import OPENAI_RESPONSES

CLIENT_APIS: tuple[ClientApi, ...] = (OPENAI_CHAT, ANTHROPIC_MESSAGES, OPENAI_RESPONSES)

BY_NAME: dict[str, ClientApi] = {api.name: api for api in CLIENT_APIS}
#: path -> (client API, decision only?)
ENDPOINTS: dict[str, tuple[ClientApi, bool]] = {
    **{api.path: (api, False) for api in CLIENT_APIS},
    **{api.routing_path: (api, True) for api in CLIENT_APIS},
}
#: the error shape for requests no API claims (unknown paths)
DEFAULT_API = OPENAI_CHAT


def api_named(name: str) -> ClientApi:
    """The API called `name`; KeyError for names no module defines."""
    return BY_NAME[name]


__all__ = [
    "ANTHROPIC_MESSAGES",
    "BY_NAME",
    "CLIENT_APIS",
    "DEFAULT_API",
    "ENDPOINTS",
    "OPENAI_CHAT",
    "OPENAI_RESPONSES",
    "ClientApi",
    "InlinePreference",
    "ParsedRequest",
    "RequestFormatError",
    "api_named",
]
