"""One module per client API format; `parse_request` picks by format."""

from __future__ import annotations

from collections.abc import Callable

from plano_extproc.formats.anthropic_messages import parse_anthropic_messages
from plano_extproc.formats.base import ApiFormat, InlinePreference, ParsedRequest, RequestFormatError
from plano_extproc.formats.openai_chat import parse_openai_chat
from plano_extproc.formats.openai_responses import parse_openai_responses

PARSERS: dict[ApiFormat, Callable[[bytes], ParsedRequest]] = {
    ApiFormat.OPENAI_CHAT: parse_openai_chat,
    ApiFormat.ANTHROPIC_MESSAGES: parse_anthropic_messages,
    ApiFormat.OPENAI_RESPONSES: parse_openai_responses,
}


def parse_request(api_format: ApiFormat, raw: bytes) -> ParsedRequest:
    return PARSERS[api_format](raw)


__all__ = ["ApiFormat", "InlinePreference", "ParsedRequest", "RequestFormatError", "parse_request", "PARSERS"]
