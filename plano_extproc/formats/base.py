"""What every client API format parser produces, and the typed error it raises on bad input."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from plano_extproc.conversation import Turn
from plano_extproc.router.base import MAX_EXAMPLE_CHARS, MAX_ROUTE_EXAMPLES


class ApiFormat(str, enum.Enum):
    OPENAI_CHAT = "openai_chat"
    ANTHROPIC_MESSAGES = "anthropic_messages"
    OPENAI_RESPONSES = "openai_responses"


class RequestFormatError(Exception):
    """The client sent something we cannot route. Carries what the client needs to fix it."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


class InlinePreference(BaseModel):
    """One route given in the request body; it replaces the configured routes for that request."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=256)
    description: str = Field(min_length=1, max_length=4096)
    models: tuple[str, ...] = Field(min_length=1, max_length=32)
    examples: tuple[Annotated[str, Field(min_length=1, max_length=MAX_EXAMPLE_CHARS)], ...] = Field(
        default=(), max_length=MAX_ROUTE_EXAMPLES
    )


class _LegacyRoute(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=256)
    description: str = Field(min_length=1, max_length=4096)


class _LegacyPolicy(BaseModel):
    """The older inline shape: `routing_policy: [{model, routing_preferences: [{name, description}]}]`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    model: str = Field(min_length=1)
    routing_preferences: tuple[_LegacyRoute, ...] = Field(min_length=1)


_PREFERENCES = TypeAdapter(tuple[InlinePreference, ...])
_POLICIES = TypeAdapter(tuple[_LegacyPolicy, ...])
MAX_INLINE_ROUTES = 64


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    api_format: ApiFormat
    model: str | None
    stream: bool
    #: None when the body carried no inline routes (the configured ones apply)
    preferences: tuple[InlinePreference, ...] | None
    #: the turns the router sees, filtered per DESIGN §3
    conversation: tuple[Turn, ...]
    #: the JSON body with our routing fields removed; what goes upstream after the model is set
    body: dict[str, Any]


def load_json_object(raw: bytes) -> dict[str, Any]:
    if not raw or not raw.strip():
        raise RequestFormatError("the request body is empty; send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise RequestFormatError(f"the request body is not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(body, dict):
        raise RequestFormatError(f"the request body must be a JSON object, not {_json_type(body)}")
    return body


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array", dict: "an object"}.get(
        type(value), type(value).__name__
    )


def _validation_message(field: str, exc: ValidationError) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    loc = field + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
    msg = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
    return f"{loc}: {msg}"


def pop_inline_preferences(body: dict[str, Any]) -> tuple[InlinePreference, ...] | None:
    """Remove and validate `routing_preferences` (or the older `routing_policy`) from a body."""
    prefs_raw = body.pop("routing_preferences", None)
    policy_raw = body.pop("routing_policy", None)
    if prefs_raw is not None and policy_raw is not None:
        raise RequestFormatError("send either routing_preferences or routing_policy, not both", param="routing_policy")
    if prefs_raw is not None:
        if not isinstance(prefs_raw, list) or not prefs_raw:
            raise RequestFormatError(
                "routing_preferences must be a non-empty array of {name, description, models}", param="routing_preferences"
            )
        try:
            prefs = _PREFERENCES.validate_python(prefs_raw)
        except ValidationError as exc:
            raise RequestFormatError(_validation_message("routing_preferences", exc), param="routing_preferences") from None
    elif policy_raw is not None:
        if not isinstance(policy_raw, list) or not policy_raw:
            raise RequestFormatError(
                "routing_policy must be a non-empty array of {model, routing_preferences}", param="routing_policy"
            )
        try:
            policies = _POLICIES.validate_python(policy_raw)
        except ValidationError as exc:
            raise RequestFormatError(_validation_message("routing_policy", exc), param="routing_policy") from None
        merged: dict[str, InlinePreference] = {}
        for policy in policies:
            for route in policy.routing_preferences:
                old = merged.get(route.name)
                models = (old.models if old else ()) + (policy.model,)
                merged[route.name] = InlinePreference(name=route.name, description=route.description, models=models)
        prefs = tuple(merged.values())
    else:
        return None
    if len(prefs) > MAX_INLINE_ROUTES:
        raise RequestFormatError(f"at most {MAX_INLINE_ROUTES} inline routes are allowed", param="routing_preferences")
    names = [p.name for p in prefs]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise RequestFormatError(f"routing_preferences: route name '{dup}' appears twice", param="routing_preferences")
    return prefs


def read_model_and_stream(body: dict[str, Any]) -> tuple[str | None, bool]:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestFormatError(f"model must be a string, not {_json_type(model)}", param="model")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise RequestFormatError(f"stream must be a boolean, not {_json_type(stream)}", param="stream")
    return (model or None), stream


def text_of_parts(parts: list[Any], where: str, text_types: frozenset[str]) -> str:
    """Join the text parts of a content array with newlines; images and other parts are ignored."""
    texts = []
    for i, part in enumerate(parts):
        if not isinstance(part, dict):
            raise RequestFormatError(f"{where}[{i}] must be an object with a type", param=where)
        if part.get("type") in text_types:
            text = part.get("text")
            if not isinstance(text, str):
                raise RequestFormatError(f"{where}[{i}].text must be a string", param=where)
            texts.append(text)
    return "\n".join(texts)


def require_list(body: dict[str, Any], key: str) -> list[Any]:
    value = body.get(key)
    if value is None:
        raise RequestFormatError(f"'{key}' is required", param=key)
    if not isinstance(value, list):
        raise RequestFormatError(f"'{key}' must be an array, not {_json_type(value)}", param=key)
    return value


def require_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise RequestFormatError(f"{where} must be an object, not {_json_type(value)}", param=where)
    return value
