"""What the OpenAI Chat <-> Anthropic Messages translators share. Pure: no I/O.

* `TranslationError`: input that the target API cannot express at all (the caller answers 400 in the
  client's error shape). Everything else is translated or dropped, never raised.
* Model facts (`claude_facts`, `openai_facts`): the translators must not turn a valid client request into
  a provider 400, and some parameters are accepted by one model and rejected by its sibling (Claude Opus
  4.7+ reject ``temperature``; OpenAI o-series and GPT-5 reject ``max_tokens``; gpt-4o rejects
  ``max_tokens`` above 16384 — which is exactly what an Anthropic client such as Claude Code sends). The
  facts come from model ids, newest rule first; an id we cannot read gets the conservative answer, which
  is documented next to each field. They are best knowledge, not a registry: new families need a line here.
* Stop reasons, usage and error shapes in both directions, and SSE encoders that write one event with a
  single ``orjson.dumps`` (orjson never emits a raw newline, so one ``data:`` line is always enough).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import orjson

from plano_extproc.apis.base import RequestFormatError

JsonObject = dict[str, Any]


class TranslationError(RequestFormatError):
    """The client's request cannot be expressed in the provider's API. `param` names the offending field;
    the caller answers 400 in the client's error shape."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message, param=param, status=400)


# --------------------------------------------------------------------------------------------- JSON, SSE


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def dumps_str(value: Any) -> str:
    return orjson.dumps(value).decode()


def sse_data(payload: bytes) -> bytes:
    """An unnamed event (OpenAI streams)."""
    return b"data: " + payload + b"\n\n"


def sse_named(event: bytes, payload: bytes) -> bytes:
    """A named event (Anthropic streams: the SDK skips events without an ``event:`` line)."""
    return b"event: " + event + b"\ndata: " + payload + b"\n\n"


def as_object(value: Any) -> JsonObject | None:
    return value if isinstance(value, dict) else None


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def as_count(value: object) -> int:
    """A token count, 0 when absent or not a non-negative int."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return 0
    return value


def as_number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def positive_int(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


# --------------------------------------------------------------------------------------------- content

_DATA_URL = re.compile(r"data:(?P<media>[^;,]*)(?P<params>(?:;[^;,]*)*?);base64,(?P<data>.*)", re.DOTALL)
_TOOL_ID_OK = re.compile(r"[A-Za-z0-9_-]+")
_TOOL_ID_BAD = re.compile(r"[^A-Za-z0-9_-]")


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``data:<media>;base64,<data>`` -> (media type, base64 data); None when `url` is not a data URL."""
    if not url.startswith("data:"):
        return None
    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise TranslationError("only base64 data: URLs can be translated", "image_url")
    return match["media"] or "application/octet-stream", match["data"]


def data_url(media_type: str, data: str) -> str:
    return f"data:{media_type};base64,{data}"


def anthropic_tool_id(tool_id: Any, fallback: str) -> str:
    """Anthropic requires tool_use ids to match ``^[a-zA-Z0-9_-]+$``; OpenAI-compatible providers send others
    (``functions.get_weather:0``). Mapped deterministically, so a tool_use and its tool_result still pair."""
    if not isinstance(tool_id, str) or not tool_id:
        return fallback
    if _TOOL_ID_OK.fullmatch(tool_id):
        return tool_id
    return _TOOL_ID_BAD.sub("_", tool_id)


def json_object_or_empty(arguments: Any) -> JsonObject:
    """OpenAI tool-call ``arguments`` (a JSON string) -> the object Anthropic's ``input`` must be. A model
    cut off mid-call leaves invalid JSON in history; it becomes ``{}`` rather than failing the conversation."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        parsed = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


# --------------------------------------------------------------------------------------------- model facts

_CLAUDE_NEW = re.compile(r"claude-(?P<family>[a-z]+)-(?P<major>\d+)(?:-(?P<minor>\d{1,2}))?(?![0-9])")
_CLAUDE_OLD = re.compile(r"claude-(?P<major>\d)(?:-(?P<minor>\d))?-(?P<family>[a-z]+)")

ThinkingStyle = Literal["none", "budget", "adaptive"]


@dataclass(frozen=True, slots=True)
class ClaudeFacts:
    version: tuple[int, int] | None  # None: not a model id we can read
    family: str | None
    #: the largest max_tokens the model accepts (client values are clamped to it); None: unknown, no clamp
    max_output: int | None
    #: max_tokens when the OpenAI client gave none (Anthropic requires one): min(max_output, 32000); 4096
    #: (accepted by every Claude model) for an id we cannot read
    default_max_tokens: int
    #: False from Opus 4.7 on: temperature/top_p/top_k are rejected ("deprecated for this model")
    sampling: bool
    #: "budget": thinking {type: enabled, budget_tokens} (3.7 - 4.5); "adaptive": thinking {type: adaptive}
    #: + output_config.effort (4.6+, where budget_tokens is deprecated); "none": no thinking (before 3.7)
    thinking: ThinkingStyle
    #: output_config.format (JSON schema) and tools[].strict are honoured (4.5+, Opus 4.1)
    structured_outputs: bool
    #: output_config.effort "max" is accepted (Opus 4.6+, every 5.x)
    max_effort: bool


@lru_cache(maxsize=256)
def claude_facts(model_id: str) -> ClaudeFacts:
    name = model_id.lower()
    match = _CLAUDE_NEW.search(name) or _CLAUDE_OLD.search(name)
    if match is None:
        return ClaudeFacts(None, None, None, 4096, True, "none", False, False)
    family = match["family"]
    version = (int(match["major"]), int(match["minor"] or 0))
    if version < (3, 5):
        max_output = 4096
    elif version < (3, 7):
        max_output = 8192
    elif version < (4, 0):
        max_output = 64000
    elif family == "opus" and version < (4, 5):
        max_output = 32000
    elif family == "opus" and version >= (4, 6):
        max_output = 128000
    else:
        max_output = 64000
    if version >= (4, 6):
        thinking: ThinkingStyle = "adaptive"
    elif version >= (3, 7):
        thinking = "budget"
    else:
        thinking = "none"
    return ClaudeFacts(
        version=version,
        family=family,
        max_output=max_output,
        default_max_tokens=min(max_output, 32000),
        sampling=version < (4, 7),
        thinking=thinking,
        structured_outputs=version >= (4, 5) or version == (4, 1),
        max_effort=(family == "opus" and version >= (4, 6)) or version >= (5, 0),
    )


@dataclass(frozen=True, slots=True)
class OpenAIFacts:
    #: o-series and GPT-5 (not gpt-5-chat): max_completion_tokens instead of max_tokens, no temperature /
    #: top_p / stop, reasoning_effort accepted
    reasoning: bool
    #: reasoning_effort may be sent (reasoning models and gpt-oss); everyone else rejects the field
    reasoning_effort: bool
    #: the largest max_tokens the model accepts; None: unknown (the client's value passes unchanged)
    max_output: int | None


# longest prefix first
_OPENAI_MAX_OUTPUT: tuple[tuple[str, int], ...] = (
    ("gpt-5-chat", 16384),
    ("gpt-5", 128000),
    ("gpt-4o-mini", 16384),
    ("gpt-4o", 16384),
    ("chatgpt-4o", 16384),
    ("gpt-4.1", 32768),
    ("gpt-4-turbo", 4096),
    ("gpt-4", 8192),
    ("gpt-3.5", 4096),
    ("o1-mini", 65536),
    ("o1", 100000),
    ("o3", 100000),
    ("o4-mini", 100000),
    ("deepseek-chat", 8192),
)
_O_SERIES = re.compile(r"o\d(?:$|-)")


@lru_cache(maxsize=256)
def openai_facts(model_id: str) -> OpenAIFacts:
    name = model_id.lower().rsplit("/", 1)[-1]
    reasoning = bool(_O_SERIES.match(name)) or (name.startswith("gpt-5") and "chat" not in name)
    max_output = next((limit for prefix, limit in _OPENAI_MAX_OUTPUT if name.startswith(prefix)), None)
    return OpenAIFacts(reasoning, reasoning or name.startswith("gpt-oss"), max_output)


# --------------------------------------------------------------------------------------------- stop reasons

#: Anthropic stop_reason -> OpenAI finish_reason. pause_turn (a server tool paused the turn) has no OpenAI
#: counterpart; the turn did end for the client, so "stop". A context-window stop is a length stop.
ANTHROPIC_TO_OPENAI_FINISH: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}

#: OpenAI finish_reason -> Anthropic stop_reason. OpenAI does not say which stop sequence matched, so
#: "stop" is end_turn (stop_sequence stays null).
OPENAI_TO_ANTHROPIC_STOP: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# --------------------------------------------------------------------------------------------- usage


def openai_usage_from_anthropic(usage: JsonObject) -> JsonObject:
    """Anthropic ``input_tokens`` excludes cache reads and writes; OpenAI ``prompt_tokens`` includes them."""
    fresh = as_count(usage.get("input_tokens"))
    read = as_count(usage.get("cache_read_input_tokens"))
    written = as_count(usage.get("cache_creation_input_tokens"))
    output = as_count(usage.get("output_tokens"))
    prompt = fresh + read + written
    result: JsonObject = {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": read},
    }
    if written:
        result["prompt_tokens_details"]["cache_write_tokens"] = written
    details = as_object(usage.get("output_tokens_details"))
    if details is not None and "thinking_tokens" in details:
        result["completion_tokens_details"] = {"reasoning_tokens": as_count(details["thinking_tokens"])}
    return result


def anthropic_usage_from_openai(usage: JsonObject) -> JsonObject:
    prompt = as_count(usage.get("prompt_tokens"))
    details = as_object(usage.get("prompt_tokens_details")) or {}
    read = as_count(details.get("cached_tokens"))
    written = as_count(details.get("cache_write_tokens"))
    result: JsonObject = {
        "input_tokens": max(prompt - read - written, 0),
        "output_tokens": as_count(usage.get("completion_tokens")),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
    }
    completion_details = as_object(usage.get("completion_tokens_details"))
    if completion_details is not None and completion_details.get("reasoning_tokens") is not None:
        result["output_tokens_details"] = {"thinking_tokens": as_count(completion_details["reasoning_tokens"])}
    return result


# --------------------------------------------------------------------------------------------- errors

ANTHROPIC_ERROR_BY_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

#: Anthropic error type -> (OpenAI error type, OpenAI code)
OPENAI_ERROR_BY_ANTHROPIC: dict[str, tuple[str, str | None]] = {
    "invalid_request_error": ("invalid_request_error", None),
    "authentication_error": ("invalid_request_error", "invalid_api_key"),
    "billing_error": ("insufficient_quota", "insufficient_quota"),
    "permission_error": ("invalid_request_error", "permission_denied"),
    "not_found_error": ("invalid_request_error", "model_not_found"),
    "rate_limit_error": ("requests", "rate_limit_exceeded"),
    "timeout_error": ("server_error", "timeout"),
    "api_error": ("server_error", None),
    "overloaded_error": ("server_error", "overloaded"),
}


def anthropic_error_type(status: int) -> str:
    if status in ANTHROPIC_ERROR_BY_STATUS:
        return ANTHROPIC_ERROR_BY_STATUS[status]
    return "api_error" if status >= 500 else "invalid_request_error"


@dataclass(frozen=True, slots=True)
class ProviderError:
    message: str
    type: str | None
    code: str | None
    param: str | None


def parse_provider_error(status: int, body: bytes) -> ProviderError:
    """Any provider's error body: Anthropic ``{type: error, error: {type, message}}``, OpenAI ``{error:
    {message, type, code, param}}`` (or ``{error: "text"}``), a list of those (Gemini), ``{message}`` /
    ``{detail}``, or plain text (a proxy's HTML page): its message is kept, short."""
    try:
        parsed: Any = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
        text = body.decode("utf-8", "replace").strip()
        if text:
            return ProviderError(text[:1000], None, None, None)
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    if isinstance(parsed, dict):
        error = parsed.get("error", parsed)
        if isinstance(error, str):
            return ProviderError(error, None, None, None)
        if isinstance(error, dict):
            message = error.get("message") or error.get("detail") or parsed.get("message")
            if not isinstance(message, str) or not message:
                message = dumps_str(error)[:1000] if error else None
            code = error.get("code")
            return ProviderError(
                message or f"upstream returned HTTP {status}",
                as_str(error.get("type")),
                str(code) if code is not None and not isinstance(code, bool) else None,
                as_str(error.get("param")),
            )
    return ProviderError(f"upstream returned HTTP {status}", None, None, None)


#: OpenAI's context-overflow message; Anthropic's is "prompt is too long: N tokens > M maximum"
OPENAI_CONTEXT_OVERFLOW = re.compile(
    r"maximum context length is (?P<limit>\d+) tokens.*?(?:resulted in|requested) (?P<used>\d+) tokens", re.DOTALL
)
ANTHROPIC_CONTEXT_OVERFLOW = "prompt is too long"
