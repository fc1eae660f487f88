"""What every client API spec provides, what its parser produces, and the typed error it raises. Pure.

A client API is described once, by a `ClientApi` object in its own module; the registry in
`plano_extproc.apis` lists them, and endpoints, error shapes, provider paths, the CLI and the gRPC
mapping are derived from it.

Parsers validate only what routing needs — a JSON object, a string `model`, a boolean `stream`, the
inline routes — and read the conversation liberally: a role, part or field they do not use is skipped,
never rejected. The provider is the judge of its own API.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from plano_extproc.conversation import Turn, strip_context_blocks
from plano_extproc.ranking import SelectionPolicy
from plano_extproc.router.base import MAX_EXAMPLE_CHARS, MAX_ROUTE_EXAMPLES
from plano_extproc.usage import Usage


class RequestFormatError(Exception):
    """The client sent something we cannot route. Carries what the client needs to fix it."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


#: (status, message, param) -> the JSON error object of an API
ErrorJson = Callable[[int, str, "str | None"], dict[str, Any]]


@dataclass(frozen=True, eq=False)
class ClientApi:
    """One API clients call us with. Identity is the object; `name` is its stable label."""

    #: stable name: metrics label, decision metadata, config and proto mapping ("openai_chat")
    name: str
    #: for messages to users ("the OpenAI Chat Completions API")
    title: str
    #: the proxy path; the decision-only path is "/routing" + path
    path: str
    #: what follows a provider's version prefix ("/v1" + "/chat/completions")
    provider_suffix: str
    parse: Callable[[bytes], ParsedRequest]
    #: (status, message, param) -> the error object this API's SDKs understand (also rendered into
    #: Envoy's own error replies, bootstrap/local_replies.py)
    error_json: ErrorJson
    #: one JSON payload of this API's responses (a body or one SSE event) -> the usage it reports
    read_usage: Callable[[dict[str, Any]], Usage | None]

    @property
    def routing_path(self) -> str:
        return "/routing" + self.path

    def error_body(self, status: int, message: str, param: str | None = None) -> bytes:
        return orjson.dumps(self.error_json(status, message, param))

    def __repr__(self) -> str:
        return f"ClientApi({self.name})"


class InlinePreference(BaseModel):
    """One route given in the request body; it replaces the configured routes for that request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=256)
    description: str = Field(min_length=1, max_length=4096)
    models: tuple[str, ...] = Field(min_length=1, max_length=32)
    examples: tuple[Annotated[str, Field(min_length=1, max_length=MAX_EXAMPLE_CHARS)], ...] = Field(
        default=(), max_length=MAX_ROUTE_EXAMPLES
    )
    #: plano's selection_policy: ranks the models by the gateway's cost / latency sources
    selection_policy: SelectionPolicy | None = None

    @property
    def prefer(self) -> str:
        return self.selection_policy.prefer if self.selection_policy is not None else "none"


class _LegacyRoute(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=256)
    description: str = Field(min_length=1, max_length=4096)


class _LegacyPolicy(BaseModel):
    """The older inline shape: `routing_policy: [{model, routing_preferences: [{name, description}]}]`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(min_length=1)
    routing_preferences: tuple[_LegacyRoute, ...] = Field(min_length=1, max_length=64)


_PREFERENCES = TypeAdapter(tuple[InlinePreference, ...])
_POLICIES = TypeAdapter(tuple[_LegacyPolicy, ...])
MAX_INLINE_ROUTES = 64
#: the body keys our routing reads and removes before anything goes upstream
ROUTING_FIELDS = ("routing_preferences", "routing_policy")


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    api: ClientApi
    model: str | None
    stream: bool
    #: None when the body carried no inline routes (the configured ones apply)
    preferences: tuple[InlinePreference, ...] | None
    #: the turns the router sees, filtered per docs/routing.md ("what the router reads")
    conversation: tuple[Turn, ...]
    #: the JSON body with our routing fields removed; what goes upstream after the model is set
    body: dict[str, Any]
    #: the body exactly as the client sent it
    raw: bytes = b""
    #: the routing fields the client sent (removed from `body`, to be removed from `raw` too)
    routing_fields: tuple[str, ...] = ()


def load_json_object(raw: bytes) -> dict[str, Any]:
    if not raw or not raw.strip():
        raise RequestFormatError("the request body is empty; send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "recursion" in exc.msg.lower():
            raise RequestFormatError("the request body nests JSON too deeply") from None
        if "infinity" not in exc.msg:
            raise RequestFormatError(f"the request body is not valid JSON ({exc.msg} at position {exc.pos})") from None
        # valid JSON with a number beyond a double (1e400): not ours to refuse; read as ±inf here, the
        # provider gets the bytes as sent (jsonbody splices `model` into the raw body)
        body = _load_with_big_numbers(raw)
    if not isinstance(body, dict):
        raise RequestFormatError(f"the request body must be a JSON object, not {json_type(body)}")
    return body


def _load_with_big_numbers(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except RecursionError:
        raise RequestFormatError("the request body nests JSON too deeply") from None
    except ValueError as exc:
        raise RequestFormatError(f"the request body is not valid JSON ({exc})") from None


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    names = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def _validation_message(field: str, exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    loc = field + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
    msg = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
    return f"{loc}: {msg}"


def pop_inline_preferences(body: dict[str, Any]) -> tuple[tuple[InlinePreference, ...] | None, tuple[str, ...]]:
    """Remove and validate `routing_preferences` (or the older `routing_policy`) from a body.

    Returns the routes (None when the body has none) and the names of the fields that were present."""
    present = tuple(k for k in ROUTING_FIELDS if k in body)
    prefs_raw = body.pop("routing_preferences", None)
    policy_raw = body.pop("routing_policy", None)
    if prefs_raw is not None and policy_raw is not None:
        raise RequestFormatError("send either routing_preferences or routing_policy, not both", param="routing_policy")
    if prefs_raw is not None:
        if not isinstance(prefs_raw, list) or not prefs_raw:
            raise RequestFormatError(
                "routing_preferences must be a non-empty array of {name, description, models}", param="routing_preferences"
            )
        if len(prefs_raw) > MAX_INLINE_ROUTES:
            raise RequestFormatError(f"at most {MAX_INLINE_ROUTES} inline routes are allowed", param="routing_preferences")
        try:
            prefs = _PREFERENCES.validate_python(prefs_raw)
        except ValidationError as exc:
            raise RequestFormatError(_validation_message("routing_preferences", exc), param="routing_preferences") from None
    elif policy_raw is not None:
        prefs = _convert_policy(policy_raw)
    else:
        return None, present
    names = [p.name for p in prefs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise RequestFormatError(f"routing_preferences: route name '{dup}' appears twice", param="routing_preferences")
    return prefs, present


def _convert_policy(policy_raw: Any) -> tuple[InlinePreference, ...]:
    if not isinstance(policy_raw, list) or not policy_raw:
        raise RequestFormatError("routing_policy must be a non-empty array of {model, routing_preferences}", param="routing_policy")
    if len(policy_raw) > MAX_INLINE_ROUTES:
        raise RequestFormatError(f"at most {MAX_INLINE_ROUTES} routing_policy entries are allowed", param="routing_policy")
    try:
        policies = _POLICIES.validate_python(policy_raw)
    except ValidationError as exc:
        raise RequestFormatError(_validation_message("routing_policy", exc), param="routing_policy") from None
    merged: dict[str, tuple[str, list[str]]] = {}
    for policy in policies:
        for route in policy.routing_preferences:
            _, models = merged.setdefault(route.name, (route.description, []))
            if policy.model not in models:
                models.append(policy.model)
    if len(merged) > MAX_INLINE_ROUTES:
        raise RequestFormatError(f"at most {MAX_INLINE_ROUTES} inline routes are allowed", param="routing_policy")
    try:
        return tuple(
            InlinePreference(name=name, description=description, models=tuple(models))
            for name, (description, models) in merged.items()
        )
    except ValidationError as exc:
        raise RequestFormatError(_validation_message("routing_policy", exc), param="routing_policy") from None


def read_model_and_stream(body: dict[str, Any]) -> tuple[str | None, bool]:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestFormatError(f"model must be a string, not {json_type(model)}", param="model")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise RequestFormatError(f"stream must be a boolean, not {json_type(stream)}", param="stream")
    return (model or None), stream


def text_of(content: Any, text_types: frozenset[str]) -> str:
    """A message's routable text: the string itself, or its text parts joined with newlines. Parts of any
    other type (images, tool blocks) or shape carry no routable text and are skipped."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = []
    for part in content:
        if isinstance(part, dict):
            kind = part.get("type")
            text = part.get("text")
            if isinstance(kind, str) and kind in text_types and isinstance(text, str):
                texts.append(text)
    return "\n".join(texts)


def require_list(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    if value is None:
        raise RequestFormatError(f"'{key}' is required", param=key)
    if not isinstance(value, list):
        raise RequestFormatError(f"'{key}' must be an array, not {json_type(value)}", param=key)
    return value


class ConversationBuilder:
    """Collects the turns the router reads, in order. User turns keep only the user's own words (agent
    clients' context blocks removed, conversation.strip_context_blocks). A request whose last message is a
    tool result continues the work of its latest user turn, so the conversation is cut after that turn:
    the router decides as it did for the user's request (and the decision cache recognises it)."""

    __slots__ = ("last_is_tool", "turns")

    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self.last_is_tool = False

    def add(self, role: str, text: str) -> None:
        self.last_is_tool = False
        if role == "user":
            text = strip_context_blocks(text)
        if text:
            self.turns.append(Turn(role, text))

    def tool(self) -> None:
        self.last_is_tool = True

    def build(self) -> tuple[Turn, ...]:
        turns = self.turns
        if self.last_is_tool:
            last_user = max((i for i, t in enumerate(turns) if t.role == "user"), default=-1)
            if last_user >= 0:
                turns = turns[: last_user + 1]
        return tuple(turns)


def openai_error_json(types: dict[int, str]) -> ErrorJson:
    """The `{"error": {message, type, param, code}}` shape of the OpenAI APIs."""

    def error(status: int, message: str, param: str | None = None) -> dict[str, Any]:
        kind = types.get(status) or ("server_error" if status >= 500 else "invalid_request_error")
        return {"error": {"message": message, "type": kind, "param": param, "code": _OPENAI_CODES.get(status)}}

    return error


_OPENAI_CODES = {
    401: "invalid_api_key",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "request_too_large",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
    504: "timeout",
}


def usage_from_counts(input_tokens: Any, output_tokens: Any, *extra_input: Any) -> Usage | None:
    """Usage from token counts a provider reported; non-counts are ignored, `extra_input` is added to input."""
    inp = _count(input_tokens)
    if inp is not None:
        inp += sum(_count(v) or 0 for v in extra_input)
    out = _count(output_tokens)
    return None if inp is None and out is None else Usage(inp, out)


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value
