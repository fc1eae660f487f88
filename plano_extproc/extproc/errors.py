"""Client-facing error bodies in the shape each API's SDKs understand."""

from __future__ import annotations

import orjson

from plano_extproc.formats import ApiFormat

_OPENAI_TYPES = {400: "invalid_request_error", 404: "not_found_error", 413: "invalid_request_error", 500: "server_error", 503: "server_error"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 404: "not_found_error", 413: "request_too_large", 500: "api_error", 503: "overloaded_error"}


def error_body(api_format: ApiFormat | None, status: int, message: str, param: str | None = None, code: str | None = None) -> bytes:
    if api_format is ApiFormat.ANTHROPIC_MESSAGES:
        return orjson.dumps({"type": "error", "error": {"type": _ANTHROPIC_TYPES.get(status, "api_error"), "message": message}})
    return orjson.dumps(
        {"error": {"message": message, "type": _OPENAI_TYPES.get(status, "server_error"), "param": param, "code": code}}
    )
