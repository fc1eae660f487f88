"""Responses clients on Chat Completions providers: golden translations from the documented shapes, checked
the way a client sees them (the `openai` SDK's own types, its stream accumulator, the SDK over HTTP)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.chat.completion_create_params import CompletionCreateParamsBase
from openai.types.responses import Response, ResponseFunctionCallArgumentsDeltaEvent, ResponseStreamEvent
from pydantic import TypeAdapter

from plano_extproc.apis.base import RequestFormatError
from plano_extproc.translation.openai_responses_to_openai_chat import (
    ChatTarget,
    StreamTranslator,
    TranslationError,
    translate_error,
    translate_request,
    translate_response,
)
from plano_extproc.translation.sse import SseParser

GOLDEN = Path(__file__).parent / "golden" / "translation"
EVENTS = TypeAdapter(ResponseStreamEvent)
CHAT_FIELDS = set(CompletionCreateParamsBase.__annotations__) | {"stream"}

Json = dict[str, Any]


# ----------------------------------------------------------------------------------------------- helpers


def chat_sse(chunks: list[Json | str], *, done: bool = True) -> bytes:
    out = b"".join(b"data: " + (c.encode() if isinstance(c, str) else orjson.dumps(c)) + b"\n\n" for c in chunks)
    return out + (b"data: [DONE]\n\n" if done else b"")


def chunk(delta: Json | None = None, finish: str | None = None, **extra: Any) -> Json:
    choices = [] if delta is None and finish is None else [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    return {"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1700000000, "model": "llama-3.3", "choices": choices, **extra}


def text_stream(text: str, *, finish: str = "stop", usage: Json | None = None) -> bytes:
    """The shape of plano's own chat mock: a role chunk with empty content, one chunk per word, the stop."""
    words = text.split(" ")
    chunks: list[Json | str] = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": (" " if i else "") + w}) for i, w in enumerate(words)]
    chunks.append(chunk({}, finish))
    if usage is not None:
        chunks.append(chunk(None, usage=usage))
    return chat_sse(chunks)


def events_of(raw: bytes) -> list[tuple[str | None, Json]]:
    parser = SseParser()
    return [(e.event, orjson.loads(e.data)) for e in parser.feed(raw) + parser.finish()]


def run_stream(raw: bytes, request: Json | None = None, pieces: list[bytes] | None = None) -> bytes:
    t = StreamTranslator(client_model="client-model", request=request)
    out = b"".join(t.feed(p) for p in (pieces if pieces is not None else [raw]))
    return out + t.finish()


def check_stream(raw_out: bytes, request: Json | None = None) -> tuple[list[Json], Any]:
    """Every event valid for the SDK, named like its type, numbered 0.., created first, one terminal last;
    then accumulated by the SDK's own stream state. Returns (events, final response snapshot or None)."""
    events = events_of(raw_out)
    assert events, "no events"
    payloads = []
    for i, (name, data) in enumerate(events):
        EVENTS.validate_python(data)
        assert name == data["type"]
        assert data["sequence_number"] == i
        payloads.append(data)
    assert payloads[0]["type"] == "response.created" and payloads[1]["type"] == "response.in_progress"
    terminals = [p for p in payloads if p["type"] in ("response.completed", "response.incomplete", "response.failed")]
    assert len(terminals) == 1 and terminals[0] is payloads[-1]
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=(request or {}).get("tools") or [], text_format=openai.omit)
    for p in payloads:
        state.handle_event(EVENTS.validate_python(p))
    # items open/close in pairs, indexes in order of announcement
    added = [p["output_index"] for p in payloads if p["type"] == "response.output_item.added"]
    done = sorted(p["output_index"] for p in payloads if p["type"] == "response.output_item.done")
    assert added == list(range(len(added))) and done == added
    return payloads, Response.model_validate(payloads[-1]["response"])


def of_type(payloads: list[Json], kind: str) -> list[Json]:
    return [p for p in payloads if p["type"] == kind]


def items(resp: Response) -> list[Json]:
    """The output items as plain JSON (after the SDK accepted them), for assertions."""
    return [o.model_dump() for o in resp.output]


def chat_completion(message: Json, finish: str = "stop", usage: Json | None = None) -> Json:
    return {
        "id": "chatcmpl-42",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "llama-3.3",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def codex_request() -> Json:
    body: Json = json.loads((GOLDEN / "responses_codex_request.json").read_text())
    return body


# ------------------------------------------------------------------------------------------ request side


def test_codex_request_becomes_a_plain_chat_request() -> None:
    req = codex_request()
    chat = translate_request(req, model_id="llama-3.3-70b-versatile")
    developer = req["input"][0]["content"][0]["text"]
    expected_tools = [
        {"type": "function", "function": {"name": t["name"], "description": t["description"], "parameters": t["parameters"]}}
        for t in req["tools"]
    ]
    assert chat == {
        "model": "llama-3.3-70b-versatile",
        "messages": [
            {"role": "system", "content": req["instructions"] + "\n\n" + developer},
            {"role": "user", "content": req["input"][1]["content"][0]["text"]},
            {"role": "user", "content": req["input"][2]["content"][0]["text"]},
            {"role": "user", "content": "Add a --verbose flag to cli.py"},
        ],
        "tools": expected_tools,
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning_effort": "medium",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert len(chat["tools"]) == 9
    assert "<environment_context>" in chat["messages"][2]["content"]
    # nothing a strict chat provider would reject: only documented Chat Completions fields
    assert set(chat) <= CHAT_FIELDS
    assert req == codex_request(), "the client's body is not modified"


def test_openai_chat_targets_can_take_the_openai_only_fields() -> None:
    chat = translate_request(codex_request(), model_id="gpt-4.1", target=ChatTarget(openai_extensions=True, max_tokens_field="max_completion_tokens"))
    assert chat["prompt_cache_key"] == "0199c2d4-5b7e-7a31-9c1f-3f6c2a9e8d10"
    assert chat["verbosity"] == "medium"
    assert set(chat) <= CHAT_FIELDS


def test_multi_turn_with_function_calls_and_outputs() -> None:
    req = {
        "model": "m",
        "input": [
            {"role": "user", "content": "What's the weather in Paris and Rome?"},
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAAB...opaque"},
            {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
             "content": [{"type": "output_text", "text": "Checking both.", "annotations": []}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_paris", "name": "get_weather", "arguments": '{"city":"Paris"}', "status": "completed"},
            {"type": "function_call", "id": "fc_2", "call_id": "call_rome", "name": "get_weather", "arguments": '{"city":"Rome"}', "status": "completed"},
            {"type": "function_call_output", "call_id": "call_paris", "output": "18C, cloudy"},
            {"type": "function_call_output", "call_id": "call_rome", "output": [{"type": "input_text", "text": "24C, sunny"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Paris 18C, Rome 24C.", "annotations": []}]},
            {"role": "user", "content": [{"type": "input_text", "text": "Thanks!"}]},
        ],
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": True}],
    }
    chat = translate_request(req, model_id="m")
    assert chat["messages"] == [
        {"role": "user", "content": "What's the weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Checking both.",
            "tool_calls": [
                {"id": "call_paris", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
                {"id": "call_rome", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_paris", "content": "18C, cloudy"},
        {"role": "tool", "tool_call_id": "call_rome", "content": "24C, sunny"},
        {"role": "assistant", "content": "Paris 18C, Rome 24C."},
        {"role": "user", "content": "Thanks!"},
    ]
    assert chat["tools"][0]["function"]["strict"] is True  # asked for, so kept


def test_string_input_instructions_and_sampling() -> None:
    chat = translate_request(
        {"model": "m", "input": "Hello", "instructions": "Be brief.", "temperature": 0.2, "top_p": 0.9, "max_output_tokens": 256,
         "store": True, "metadata": {"k": "v"}, "truncation": "auto", "include": ["message.output_text.logprobs"], "user": "u1",
         "service_tier": "auto", "top_logprobs": 2, "max_tool_calls": 3, "safety_identifier": "s"},
        model_id="mistral-large-latest",
    )
    assert chat == {
        "model": "mistral-large-latest",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}],
        "max_tokens": 256,
        "temperature": 0.2,
        "top_p": 0.9,
    }


def test_system_and_developer_items_move_to_one_leading_system_message() -> None:
    chat = translate_request(
        {"input": [
            {"role": "user", "content": "first"},
            {"role": "developer", "content": "Now answer in French."},
            {"role": "system", "content": [{"type": "input_text", "text": "Sys A"}, {"type": "input_text", "text": "Sys B"}]},
            {"role": "user", "content": "second"},
        ], "instructions": "Base."},
        model_id="m",
    )
    assert chat["messages"] == [
        {"role": "system", "content": "Base.\n\nNow answer in French.\n\nSys A\n\nSys B"},
        {"role": "user", "content": "first"},
        {"role": "user", "content": "second"},
    ]


def test_images_and_files() -> None:
    png = "data:image/png;base64,iVBORw0KGgo="
    chat = translate_request(
        {"input": [{"role": "user", "content": [
            {"type": "input_text", "text": "Compare these"},
            {"type": "input_image", "image_url": "https://example.com/a.jpg", "detail": "high"},
            {"type": "input_image", "image_url": png, "detail": "original"},
            {"type": "input_file", "filename": "r.pdf", "file_data": "data:application/pdf;base64,JVBERi0="},
        ]}]},
        model_id="m",
    )
    assert chat["messages"][0]["content"] == [
        {"type": "text", "text": "Compare these"},
        {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg", "detail": "high"}},
        {"type": "image_url", "image_url": {"url": png}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "r.pdf"}},
    ]


@pytest.mark.parametrize(
    ("part", "param"),
    [
        ({"type": "input_image", "file_id": "file-1", "detail": "auto"}, "input[0].content[0].file_id"),
        ({"type": "input_file", "file_id": "file-1"}, "input[0].content[0].file_id"),
        ({"type": "input_file", "file_url": "https://example.com/x.pdf"}, "input[0].content[0].file_url"),
        ({"type": "input_audio", "data": "..."}, "input[0].content[0].type"),
    ],
)
def test_content_we_cannot_send_is_refused_with_its_location(part: Json, param: str) -> None:
    with pytest.raises(TranslationError) as info:
        translate_request({"input": [{"role": "user", "content": [part]}]}, model_id="m")
    assert info.value.param == param and info.value.status == 400
    assert isinstance(info.value, RequestFormatError)  # the caller's existing 400 path handles it


def test_images_in_tool_outputs_follow_the_tool_messages() -> None:
    chat = translate_request(
        {"input": [
            {"role": "user", "content": "look at both"},
            {"type": "function_call", "call_id": "c1", "name": "view_image", "arguments": '{"path":"a.png"}'},
            {"type": "function_call", "call_id": "c2", "name": "view_image", "arguments": '{"path":"b.png"}'},
            {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_image", "image_url": "data:image/png;base64,AAA"}]},
            {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "b:"}, {"type": "input_image", "image_url": "data:image/png;base64,BBB"}]},
            {"role": "user", "content": "which is bigger?"},
        ]},
        model_id="m",
    )
    roles = [m["role"] for m in chat["messages"]]
    assert roles == ["user", "assistant", "tool", "tool", "user", "user"]
    assert chat["messages"][2] == {"role": "tool", "tool_call_id": "c1", "content": ""}
    assert chat["messages"][3] == {"role": "tool", "tool_call_id": "c2", "content": "b:"}
    assert chat["messages"][4]["content"] == [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,BBB"}},
    ]


def test_builtin_tools_are_dropped_and_custom_tools_become_functions() -> None:
    grammar = 'start: begin_patch hunk+ end_patch\nbegin_patch: "*** Begin Patch" LF'
    chat = translate_request(
        {"input": "edit", "tools": [
            {"type": "web_search"},
            {"type": "file_search", "vector_store_ids": ["vs_1"]},
            {"type": "mcp", "server_label": "x", "server_url": "https://mcp.example"},
            {"type": "custom", "name": "apply_patch", "description": "Edit files.", "format": {"type": "grammar", "syntax": "lark", "definition": grammar}},
            {"type": "function", "name": "shell", "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}}, "strict": False},
        ], "tool_choice": "auto", "parallel_tool_calls": True},
        model_id="m",
    )
    assert [t["function"]["name"] for t in chat["tools"]] == ["apply_patch", "shell"]
    patch = chat["tools"][0]["function"]
    assert patch["parameters"]["required"] == ["input"] and patch["parameters"]["properties"]["input"]["type"] == "string"
    assert patch["description"].startswith("Edit files.") and grammar in patch["description"]
    assert "strict" not in chat["tools"][1]["function"]
    assert chat["tool_choice"] == "auto" and chat["parallel_tool_calls"] is True


def test_only_builtin_tools_leave_a_request_without_tools() -> None:
    chat = translate_request({"input": "hi", "tools": [{"type": "web_search_preview"}], "tool_choice": "auto", "parallel_tool_calls": True}, model_id="m")
    assert "tools" not in chat and "tool_choice" not in chat and "parallel_tool_calls" not in chat


@pytest.mark.parametrize(
    "choice",
    [{"type": "web_search_preview"}, {"type": "file_search"}, {"type": "mcp", "server_label": "x"}, {"type": "code_interpreter"}, "required"],
)
def test_tool_choice_that_forces_what_cannot_run_is_refused(choice: object) -> None:
    with pytest.raises(TranslationError) as info:
        translate_request({"input": "hi", "tools": [{"type": "web_search"}], "tool_choice": choice}, model_id="m")
    assert info.value.param == "tool_choice"


def test_tool_choice_mapping() -> None:
    tools = [
        {"type": "function", "name": "a", "parameters": {"type": "object", "properties": {}}},
        {"type": "function", "name": "b", "parameters": {"type": "object", "properties": {}}},
        {"type": "custom", "name": "c"},
        {"type": "web_search"},
    ]
    base = {"input": "hi", "tools": tools}

    def choice(value: object) -> tuple[object, list[str]]:
        chat = translate_request({**base, "tool_choice": value}, model_id="m")
        return chat.get("tool_choice"), [t["function"]["name"] for t in chat["tools"]]

    assert choice("none") == ("none", ["a", "b", "c"])
    assert choice("required") == ("required", ["a", "b", "c"])
    assert choice({"type": "function", "name": "b"}) == ({"type": "function", "function": {"name": "b"}}, ["a", "b", "c"])
    assert choice({"type": "custom", "name": "c"}) == ({"type": "function", "function": {"name": "c"}}, ["a", "b", "c"])
    allowed = {"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "b"}, {"type": "web_search"}]}
    assert choice(allowed) == ("required", ["b"])
    with pytest.raises(TranslationError):
        choice({"type": "allowed_tools", "mode": "required", "tools": [{"type": "web_search"}]})


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ({"type": "json_object"}, {"type": "json_object"}),
        (
            {"type": "json_schema", "name": "city", "schema": {"type": "object", "properties": {"n": {"type": "string"}}}, "strict": True},
            {"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object", "properties": {"n": {"type": "string"}}}, "strict": True}},
        ),
        ({"type": "text"}, None),
    ],
)
def test_text_format_becomes_response_format(fmt: Json, expected: Json | None) -> None:
    chat = translate_request({"input": "hi", "text": {"format": fmt}}, model_id="m")
    assert chat.get("response_format") == expected


def test_targets_that_reject_fields() -> None:
    req = {"input": "hi", "stream": True, "max_output_tokens": 100, "reasoning": {"effort": "high"}}
    assert translate_request(req, model_id="m")["max_tokens"] == 100
    strict = translate_request(req, model_id="m", target=ChatTarget(stream_usage=False, reasoning_effort=False, max_tokens_field="max_completion_tokens"))
    assert strict == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 100, "stream": True}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("previous_response_id", "resp_abc"),
        ("conversation", "conv_123"),
        ("prompt", {"id": "pmpt_1"}),
        ("background", True),
    ],
)
def test_server_side_state_is_refused_clearly(field: str, value: object) -> None:
    with pytest.raises(TranslationError) as info:
        translate_request({"input": "hi", field: value}, model_id="m")
    assert info.value.param == field
    assert "state" in info.value.message or "stored" in info.value.message


def test_absent_state_fields_are_fine() -> None:
    chat = translate_request({"input": "hi", "previous_response_id": None, "conversation": None, "background": False, "store": False}, model_id="m")
    assert chat["messages"] == [{"role": "user", "content": "hi"}]


def test_item_references_and_empty_input_are_refused() -> None:
    with pytest.raises(TranslationError, match="item_reference"):
        translate_request({"input": [{"type": "item_reference", "id": "msg_1"}, {"role": "user", "content": "x"}]}, model_id="m")
    with pytest.raises(TranslationError):
        translate_request({"input": [], "instructions": "only a system prompt"}, model_id="m")
    with pytest.raises(TranslationError):
        translate_request({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, model_id="m")


def test_unknown_fields_and_items_are_not_forwarded() -> None:
    chat = translate_request(
        {"input": [{"role": "user", "content": "hi"}, {"type": "web_search_call", "id": "ws_1", "status": "completed"}],
         "brand_new_option": {"x": 1}, "context_management": [{"type": "compaction"}]},
        model_id="m",
    )
    assert chat == {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


# ----------------------------------------------------------------------------------------- JSON response


def test_text_answer() -> None:
    req = {"input": "hi", "instructions": "Be brief.", "temperature": 0.3, "metadata": {"team": "a"}, "tools": []}
    raw = translate_response(
        chat_completion(
            {"content": "Hello there!"},
            usage={"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
                   "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20},
                   "completion_tokens_details": {"reasoning_tokens": 12}},
        ),
        client_model="gpt-4o",
        request=req,
    )
    parsed = Response.model_validate(raw)
    assert parsed.output_text == "Hello there!"
    assert parsed.status == "completed" and parsed.object == "response" and parsed.model == "gpt-4o"
    assert parsed.id == "resp_chatcmpl-42" and parsed.created_at == 1700000000
    assert parsed.usage is not None
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens, parsed.usage.total_tokens) == (120, 30, 150)
    assert parsed.usage.input_tokens_details.cached_tokens == 100
    assert parsed.usage.input_tokens_details.cache_write_tokens == 20
    assert parsed.usage.output_tokens_details.reasoning_tokens == 12
    assert parsed.instructions == "Be brief." and parsed.temperature == 0.3 and parsed.metadata == {"team": "a"}
    assert raw["store"] is False  # nothing was stored: a later GET or previous_response_id cannot find it


def test_parallel_tool_calls() -> None:
    calls = [
        {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}},
        {"id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'}},
    ]
    resp = Response.model_validate(translate_response(chat_completion({"content": None, "tool_calls": calls}, "tool_calls"), client_model="m"))
    assert resp.status == "completed"
    assert [(o["type"], o["call_id"], o["name"], o["arguments"]) for o in items(resp)] == [
        ("function_call", "call_a", "get_weather", '{"city":"Paris"}'),
        ("function_call", "call_b", "get_weather", '{"city":"Rome"}'),
    ]
    assert resp.output_text == ""


def test_text_and_a_tool_call() -> None:
    calls = [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    resp = Response.model_validate(translate_response(chat_completion({"content": "Let me check.", "tool_calls": calls}, "tool_calls"), client_model="m"))
    assert [o.type for o in resp.output] == ["message", "function_call"]
    assert resp.output_text == "Let me check."


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_cut_short(finish: str, reason: str) -> None:
    resp = Response.model_validate(translate_response(chat_completion({"content": "partial"}, finish), client_model="m"))
    assert resp.status == "incomplete"
    assert resp.incomplete_details is not None and resp.incomplete_details.reason == reason
    assert items(resp)[0]["status"] == "incomplete"
    assert resp.output_text == "partial"


def test_reasoning_refusal_and_custom_tools() -> None:
    req = {"input": "x", "tools": [{"type": "custom", "name": "apply_patch"}]}
    patch = "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch"
    body = chat_completion(
        {"content": "", "reasoning_content": "Need to add a file.",
         "tool_calls": [{"id": "call_p", "type": "function", "function": {"name": "apply_patch", "arguments": json.dumps({"input": patch})}}]},
        "tool_calls",
    )
    resp = Response.model_validate(translate_response(body, client_model="m", request=req))
    assert [o.type for o in resp.output] == ["reasoning", "custom_tool_call"]
    out = items(resp)
    assert out[0]["content"][0]["text"] == "Need to add a file."
    assert out[1]["input"] == patch and out[1]["call_id"] == "call_p"
    refused = Response.model_validate(translate_response(chat_completion({"content": None, "refusal": "I can't help with that."}), client_model="m"))
    assert items(refused)[0]["content"] == [{"type": "refusal", "refusal": "I can't help with that."}]


def test_output_items_round_trip_as_the_next_turns_input() -> None:
    """A client (Codex with store:false) sends our output items back; they must make a valid chat history."""
    calls = [{"id": "call_x", "type": "function", "function": {"name": "shell", "arguments": '{"command":["ls"]}'}}]
    first = translate_response(chat_completion({"content": "Listing.", "reasoning_content": "hmm", "tool_calls": calls}, "tool_calls"), client_model="m")
    history = [{"role": "user", "content": "ls please"}, *first["output"], {"type": "function_call_output", "call_id": "call_x", "output": "a.txt"}]
    chat = translate_request({"input": history}, model_id="m")
    assert chat["messages"] == [
        {"role": "user", "content": "ls please"},
        {"role": "assistant", "content": "Listing.", "tool_calls": [{"id": "call_x", "type": "function", "function": {"name": "shell", "arguments": '{"command":["ls"]}'}}]},
        {"role": "tool", "tool_call_id": "call_x", "content": "a.txt"},
    ]


def test_a_given_response_id_names_the_response_and_its_items() -> None:
    calls = [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    resp = translate_response(chat_completion({"content": "x", "tool_calls": calls}, "tool_calls"), client_model="m", response_id="resp_0af3")
    assert resp["id"] == "resp_0af3" and resp["output"][0]["id"] == "msg_0af3_0"
    t = StreamTranslator(client_model="m", response_id="resp_0af3")
    payloads, _ = check_stream(t.feed(text_stream("hi")) + t.finish())
    assert {p["response"]["id"] for p in payloads if "response" in p} == {"resp_0af3"}


def test_odd_provider_bodies_still_give_a_valid_response() -> None:
    bodies: list[Json] = [{}, {"choices": []}, {"choices": [{"index": 0, "message": {"content": [{"type": "text", "text": "from parts"}]}}]}]
    for body in bodies:
        Response.model_validate(translate_response(body, client_model="m"))
    resp = Response.model_validate(translate_response({"choices": [{"index": 0, "message": {"content": [{"type": "text", "text": "from parts"}]}}]}, client_model="m"))
    assert resp.output_text == "from parts" and resp.usage is None


# ------------------------------------------------------------------------------------------------ stream


def test_stream_text() -> None:
    text = "Streaming from Claude via Responses!"
    out = run_stream(text_stream(text, usage={"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16}))
    payloads, final = check_stream(out)
    assert "".join(p["delta"] for p in of_type(payloads, "response.output_text.delta")) == text
    assert of_type(payloads, "response.output_text.done")[0]["text"] == text
    assert payloads[-1]["type"] == "response.completed"
    assert final.output_text == text and final.status == "completed"
    assert final.usage is not None and (final.usage.input_tokens, final.usage.output_tokens, final.usage.total_tokens) == (9, 7, 16)
    # the documented order of one text item
    kinds = [p["type"] for p in payloads]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]


def parallel_tool_stream() -> bytes:
    a, b = '{"city": "Paris", "unit": "c"}', '{"city": "Rome"}'
    chunks: list[Json | str] = [chunk({"role": "assistant", "content": None})]
    chunks.append(chunk({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}))
    chunks += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": a[i : i + 5]}}]}) for i in range(0, len(a), 5)]
    chunks.append(chunk({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}))
    chunks += [chunk({"tool_calls": [{"index": 1, "function": {"arguments": b[i : i + 4]}}]}) for i in range(0, len(b), 4)]
    chunks.append(chunk({}, "tool_calls"))
    chunks.append(chunk(None, usage={"prompt_tokens": 50, "completion_tokens": 20, "total_tokens": 70, "prompt_tokens_details": {"cached_tokens": 32}}))
    return chat_sse(chunks)


def test_stream_parallel_tool_calls() -> None:
    req = {"input": "weather?", "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}]}
    payloads, final = check_stream(run_stream(parallel_tool_stream(), req), req)
    deltas: dict[str, str] = {}
    for p in of_type(payloads, "response.function_call_arguments.delta"):
        deltas[p["item_id"]] = deltas.get(p["item_id"], "") + p["delta"]
    dones = {p["item_id"]: p["arguments"] for p in of_type(payloads, "response.function_call_arguments.done")}
    assert deltas == dones == {"fc_call_a": '{"city": "Paris", "unit": "c"}', "fc_call_b": '{"city": "Rome"}'}
    assert [(o["type"], o["call_id"], o["arguments"]) for o in items(final)] == [
        ("function_call", "call_a", '{"city": "Paris", "unit": "c"}'),
        ("function_call", "call_b", '{"city": "Rome"}'),
    ]
    assert final.usage is not None and final.usage.input_tokens_details.cached_tokens == 32


def test_stream_text_then_tool_call_then_length() -> None:
    chunks: list[Json | str] = [
        chunk({"role": "assistant", "content": "I'll run it."}),
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "shell", "arguments": '{"comm'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'and": ["ls"'}}]}),
        chunk({}, "length"),
    ]
    payloads, final = check_stream(run_stream(chat_sse(chunks)))
    assert payloads[-1]["type"] == "response.incomplete"
    assert final.status == "incomplete" and final.incomplete_details is not None and final.incomplete_details.reason == "max_output_tokens"
    assert [o.type for o in final.output] == ["message", "function_call"]
    # the message was whole before the call started; the call is what the limit cut
    assert [o["status"] for o in items(final)] == ["completed", "incomplete"]
    # the message item is finished before the call starts: items are sequential
    kinds = [(p["type"], p.get("output_index")) for p in payloads]
    assert kinds.index(("response.output_item.done", 0)) < kinds.index(("response.output_item.added", 1))


def test_stream_reasoning_then_text() -> None:
    chunks: list[Json | str] = [
        chunk({"role": "assistant", "reasoning_content": "Let me "}),
        chunk({"reasoning_content": "think."}),
        chunk({"content": "Four."}),
        chunk({}, "stop"),
    ]
    payloads, final = check_stream(run_stream(chat_sse(chunks)))
    assert "".join(p["delta"] for p in of_type(payloads, "response.reasoning_text.delta")) == "Let me think."
    assert [o.type for o in final.output] == ["reasoning", "message"] and final.output_text == "Four."


def test_stream_custom_tool_call() -> None:
    req = {"input": "x", "tools": [{"type": "custom", "name": "apply_patch"}]}
    patch = "*** Begin Patch\n*** Add File: b.txt\n+\"quoted\"\n*** End Patch"
    args = json.dumps({"input": patch})
    chunks: list[Json | str] = [chunk({"tool_calls": [{"index": 0, "id": "call_p", "type": "function", "function": {"name": "apply_patch", "arguments": args[:10]}}]})]
    chunks += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": args[10:]}}]}), chunk({}, "tool_calls")]
    payloads, final = check_stream(run_stream(chat_sse(chunks), req), req)
    assert of_type(payloads, "response.custom_tool_call_input.done")[0]["input"] == patch
    assert items(final)[0]["type"] == "custom_tool_call" and items(final)[0]["input"] == patch


def test_stream_provider_error_mid_stream() -> None:
    chunks: list[Json | str] = [chunk({"role": "assistant", "content": "Half an ans"}), {"error": {"message": "upstream overloaded", "type": "server_error", "code": "overloaded"}}]
    payloads, final = check_stream(run_stream(chat_sse(chunks, done=False)))
    error = of_type(payloads, "error")
    assert error and error[0]["message"] == "upstream overloaded" and error[0]["code"] == "overloaded"
    assert payloads[-1]["type"] == "response.failed"
    assert final.status == "failed" and final.error is not None and final.error.code == "server_error"
    assert items(final)[0]["status"] == "incomplete" and final.output_text == "Half an ans"


def test_stream_rate_limit_error_keeps_its_code() -> None:
    out = run_stream(b'event: error\ndata: {"error": {"message": "Rate limit reached, try again in 2s", "code": "rate_limit_exceeded"}}\n\n')
    _, final = check_stream(out)
    assert final.error is not None and final.error.code == "rate_limit_exceeded"


def test_stream_cut_before_the_end_fails_cleanly() -> None:
    raw = chat_sse([chunk({"role": "assistant", "content": "Once upon"})], done=False)
    payloads, final = check_stream(run_stream(raw))
    assert payloads[-1]["type"] == "response.failed" and final.output_text == "Once upon"


def test_stream_event_too_large_to_buffer_fails_cleanly() -> None:
    t = StreamTranslator(client_model="m")
    t._parser = SseParser(max_pending=1024)  # the bound, made small for the test
    out = t.feed(chat_sse([chunk({"content": "ok"})], done=False)) + t.feed(b"data: " + b"x" * 2048)
    out += t.feed(b"more\n\n") + t.finish()
    payloads, final = check_stream(out)
    assert payloads[-1]["type"] == "response.failed" and final.output_text == "ok"


def test_stream_without_done_marker_but_finished_completes() -> None:
    raw = chat_sse([chunk({"content": "Done."}), chunk({}, "stop")], done=False)
    payloads, final = check_stream(run_stream(raw))
    assert payloads[-1]["type"] == "response.completed" and final.output_text == "Done."


def test_empty_stream_and_empty_answer() -> None:
    _, final = check_stream(run_stream(b""))
    assert final.status == "failed"
    _, final = check_stream(run_stream(chat_sse([chunk({"role": "assistant", "content": ""}), chunk({}, "stop")])))
    assert final.status == "completed" and final.output_text == "" and [o.type for o in final.output] == ["message"]


def test_stream_ignores_what_it_does_not_use() -> None:
    raw = b": keep-alive\n\n" + b"data: not json\n\n" + text_stream("ok then")
    _, final = check_stream(run_stream(raw))
    assert final.output_text == "ok then"


def test_stream_tool_calls_without_index_or_with_the_whole_call_at_once() -> None:
    """Ollama and Gemini's OpenAI endpoint send each call whole, sometimes without `index`."""
    chunks: list[Json | str] = [
        chunk({"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "a", "arguments": '{"x":1}'}},
                                                   {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": {"y": 2}}}]}, "tool_calls"),
    ]
    _, final = check_stream(run_stream(chat_sse(chunks)))
    assert [(o["call_id"], o["name"], o["arguments"]) for o in items(final)] == [("call_1", "a", '{"x":1}'), ("call_2", "b", '{"y":2}')]


def test_stream_events_carry_what_codex_reads() -> None:
    """Codex reads response.created, output_item.added/done (whole items), output_text.delta and
    response.completed with `id` and a usage whose details are present; a stream without completed is an error."""
    req = codex_request()
    payloads, _ = check_stream(run_stream(parallel_tool_stream(), req), req)
    completed = payloads[-1]["response"]
    assert completed["id"].startswith("resp_")
    usage = completed["usage"]
    assert {"input_tokens", "output_tokens", "total_tokens"} <= set(usage)
    assert "cached_tokens" in usage["input_tokens_details"] and "reasoning_tokens" in usage["output_tokens_details"]
    for p in of_type(payloads, "response.output_item.done"):
        item = p["item"]
        assert item["type"] == "function_call" and {"name", "arguments", "call_id"} <= set(item)
    assert completed["tools"] == req["tools"] and completed["parallel_tool_calls"] is False


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_any_chunking_gives_the_same_bytes(data: st.DataObject) -> None:
    raw = data.draw(st.sampled_from([parallel_tool_stream(), text_stream("Héllo wörld, ünïcode 😀 split anywhere", usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3})]))
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(raw)), max_size=40)))
    pieces = [raw[i:j] for i, j in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    assert run_stream(raw, pieces=pieces) == run_stream(raw)


# ------------------------------------------------------------------------------------------ SDK over HTTP


class FakeChatProvider:
    """Stands in for a chat provider behind the gateway: the SDK talks Responses to the handler, which
    translates, asks this provider, and translates back - the whole client-visible round trip."""

    def __init__(self, text: str = "Hello from the chat model!", tool: tuple[str, str] | None = None) -> None:
        self.text, self.tool = text, tool
        self.seen: list[Json] = []

    def answer(self, chat: Json) -> bytes:
        self.seen.append(chat)
        if chat.get("stream"):
            if self.tool:
                name, args = self.tool
                return chat_sse([
                    chunk({"role": "assistant", "content": None}),
                    chunk({"tool_calls": [{"index": 0, "id": "call_mock_123", "type": "function", "function": {"name": name, "arguments": ""}}]}),
                    chunk({"tool_calls": [{"index": 0, "function": {"arguments": args}}]}),
                    chunk({}, "tool_calls"),
                ])
            return text_stream(self.text, usage={"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15})
        if self.tool:
            name, args = self.tool
            call = {"id": "call_mock_123", "type": "function", "function": {"name": name, "arguments": args}}
            return orjson.dumps(chat_completion({"content": None, "tool_calls": [call]}, "tool_calls"))
        return orjson.dumps(chat_completion({"content": self.text}))

    def handler(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        try:
            chat = translate_request(body, model_id="upstream-model")
        except TranslationError as e:
            return httpx.Response(400, content=orjson.dumps({"error": {"message": e.message, "type": "invalid_request_error", "param": e.param, "code": None}}))
        answer = self.answer(chat)
        if chat.get("stream"):
            t = StreamTranslator(client_model=body.get("model", ""), request=body)
            out = b"".join(t.feed(answer[i : i + 7]) for i in range(0, len(answer), 7)) + t.finish()
            return httpx.Response(200, content=out, headers={"content-type": "text/event-stream"})
        return httpx.Response(200, content=orjson.dumps(translate_response(orjson.loads(answer), client_model=body.get("model", ""), request=body)))

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(api_key="test-key", base_url="http://gateway.test/v1", max_retries=0, http_client=httpx.Client(transport=httpx.MockTransport(self.handler)))


ECHO_TOOL = [{"type": "function", "name": "echo_tool", "description": "Echo back the provided input: hello_world",
              "parameters": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}}]


def test_sdk_plain_and_mixed_content() -> None:
    provider = FakeChatProvider("Weather in Seattle")
    client = provider.client()
    resp = client.responses.create(model="claude-sonnet-4-20250514", input="Hello, translate this")
    assert resp.id and resp.output_text == "Weather in Seattle"
    resp = client.responses.create(
        model="claude-sonnet-4-20250514",
        input=[{"role": "developer", "content": "Generate a short chat title."},
               {"role": "user", "content": [{"type": "input_text", "text": "What is the weather in Seattle"}]}],
    )
    assert len(resp.output_text) > 0
    assert provider.seen[-1]["messages"] == [
        {"role": "system", "content": "Generate a short chat title."},
        {"role": "user", "content": "What is the weather in Seattle"},
    ]


def test_sdk_streaming_text() -> None:
    provider = FakeChatProvider("Streaming from Claude via Responses!")
    stream = provider.client().responses.create(model="claude-sonnet-4-20250514", input="Write a haiku", stream=True)
    chunks, completed = [], None
    for event in stream:
        if event.type == "response.output_text.delta":
            chunks.append(event.delta)
        if event.type == "response.completed":
            completed = event.response
    assert "".join(chunks) == "Streaming from Claude via Responses!"
    assert completed is not None and completed.id and completed.usage is not None and completed.usage.total_tokens == 15


def test_sdk_stream_helper_final_response() -> None:
    provider = FakeChatProvider("Final answer here.")
    with provider.client().responses.stream(model="m", input="hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == "Final answer here."


def test_sdk_tools_json_and_stream() -> None:
    provider = FakeChatProvider(tool=("echo_tool", '{"text":"hello_world"}'))
    client = provider.client()
    resp = client.responses.create(model="claude-sonnet-4-20250514", input="Call the echo tool", tools=ECHO_TOOL)  # type: ignore[arg-type]
    call = resp.output[0]
    assert call.type == "function_call" and call.name == "echo_tool" and json.loads(call.arguments) == {"text": "hello_world"}
    assert provider.seen[-1]["tools"][0]["function"]["name"] == "echo_tool"
    stream = client.responses.create(model="claude-sonnet-4-20250514", input="Call the echo tool", tools=ECHO_TOOL, stream=True)  # type: ignore[arg-type]
    args = "".join(e.delta for e in stream if isinstance(e, ResponseFunctionCallArgumentsDeltaEvent))
    assert args == '{"text":"hello_world"}'


def test_sdk_gets_a_400_for_state_it_cannot_have() -> None:
    with pytest.raises(openai.BadRequestError) as info:
        FakeChatProvider().client().responses.create(model="m", input="What is my name?", previous_response_id="resp_1")
    assert "previous_response_id" in str(info.value)


# ------------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, b'{"error": {"message": "bad tool schema", "type": "invalid_request_error", "param": "tools", "code": "invalid_value"}}',
         {"message": "bad tool schema", "type": "invalid_request_error", "param": "tools", "code": "invalid_value"}),
        (429, b'{"error": {"message": "Rate limit reached. Please try again in 2s."}}',
         {"message": "Rate limit reached. Please try again in 2s.", "type": "rate_limit_error", "param": None, "code": "rate_limit_exceeded"}),
        (400, b'[{"error": {"code": 400, "message": "Invalid JSON payload received. Unknown name \\"store\\"", "status": "INVALID_ARGUMENT"}}]',
         {"message": 'Invalid JSON payload received. Unknown name "store"', "type": "invalid_request_error", "param": None, "code": "INVALID_ARGUMENT"}),
        (422, b'{"object": "error", "message": {"detail": [{"type": "extra_forbidden", "loc": ["body", "x"]}]}, "type": "invalid_request_error", "param": null, "code": null}',
         {"message": '{"detail":[{"type":"extra_forbidden","loc":["body","x"]}]}', "type": "invalid_request_error", "param": None, "code": None}),
        (529, b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
         {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": None}),
        (502, b"<html>Bad Gateway</html>", {"message": "<html>Bad Gateway</html>", "type": "server_error", "param": None, "code": None}),
        (503, b"", {"message": "the provider answered HTTP 503", "type": "server_error", "param": None, "code": None}),
    ],
)
def test_provider_errors_in_the_responses_shape(status: int, body: bytes, expected: Json) -> None:
    assert orjson.loads(translate_error(status, body)) == {"error": expected}


def test_sdk_reads_a_translated_error() -> None:
    body = translate_error(429, b'{"error": {"message": "slow down"}}')

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429, content=body)

    client = openai.OpenAI(api_key="k", base_url="http://g.test/v1", max_retries=0, http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    with pytest.raises(openai.RateLimitError) as info:
        client.responses.create(model="m", input="hi")
    assert info.value.code == "rate_limit_exceeded" and "slow down" in info.value.message


def test_translation_does_not_mutate_inputs() -> None:
    req = codex_request()
    frozen = copy.deepcopy(req)
    body = chat_completion({"content": "x"})
    frozen_body = copy.deepcopy(body)
    translate_request(req, model_id="m")
    translate_response(body, client_model="m", request=req)
    assert req == frozen and body == frozen_body


# ------------------------------------------------------------------------ sse.py (shared by the translators)

_SSE_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=30)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.one_of(st.none(), st.sampled_from(["message", "error", "response.completed"])), st.lists(_SSE_TEXT, min_size=1, max_size=3)), max_size=8),
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.booleans(),
    st.data(),
)
def test_sse_parser_reads_events_whatever_the_line_ends_and_chunking(
    events: list[tuple[str | None, list[str]]], nl: str, comments: bool, data: st.DataObject
) -> None:
    raw = ""
    for name, lines in events:
        if comments:
            raw += f": keep-alive{nl}"
        if name is not None:
            raw += f"event: {name}{nl}"
        raw += "".join(f"data: {line}{nl}" for line in lines) + nl
    blob = raw.encode()
    cuts = sorted(data.draw(st.lists(st.integers(min_value=0, max_value=len(blob)), max_size=20)))
    parser = SseParser()
    got = [e for i, j in zip([0, *cuts], [*cuts, len(blob)], strict=True) for e in parser.feed(blob[i:j])] + parser.finish()
    assert [(e.event, e.data) for e in got] == [(name, "\n".join(lines)) for name, lines in events]


def test_sse_parser_keeps_unicode_line_separators_inside_data() -> None:
    """JSON may carry U+2028, U+2029 and U+0085 unescaped (Node's JSON.stringify, orjson do); they are not
    SSE line ends, so a model writing one must not cut its chunk in two."""
    text = "a\u2028b\u2029c\x85d"
    raw = b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": text}}]}) + b"\n\n"
    (event,) = SseParser().feed(raw)
    assert orjson.loads(event.data)["choices"][0]["delta"]["content"] == text
    _, final = check_stream(run_stream(chat_sse([chunk({"content": text}), chunk({}, "stop")])))
    assert final.output_text == text


def test_sse_parser_last_event_without_blank_line_and_size_bound() -> None:
    parser = SseParser()
    assert parser.feed(b"event: x\ndata: 1") == []
    assert [(e.event, e.data) for e in parser.finish()] == [("x", "1")]
    bounded = SseParser(max_pending=64)
    with pytest.raises(ValueError):
        bounded.feed(b"data: " + b"x" * 100)


def test_sse_parser_is_linear_in_the_bytes_fed() -> None:
    """A large buffer of many events, and one huge event arriving in small pieces (a whole tool call from a
    provider that does not stream arguments), both parse in time proportional to their size."""
    import time

    many = b"".join(b'data: {"choices":[{"index":0,"delta":{"content":"word "}}]}\n\n' for _ in range(40_000))
    huge = b"data: " + orjson.dumps({"x": "a" * 4_000_000}) + b"\n\n"
    started = time.perf_counter()
    assert len(SseParser().feed(many)) == 40_000
    parser = SseParser()
    got = [e for i in range(0, len(huge), 512) for e in parser.feed(huge[i : i + 512])]
    assert len(got) == 1 and len(got[0].data) == len(huge) - 8
    assert time.perf_counter() - started < 5.0  # quadratic parsing took minutes here
