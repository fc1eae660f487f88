"""Hostile-but-plausible requests through the real Envoy (issue 9): every answer is a 2xx, or a 4xx in the
client API's error shape — never a 5xx, a hang or a dropped connection.

Property-based (hypothesis, bounded: 150 examples in all, a few seconds each at worst). One gateway (demo
config, mock providers) serves every example; requests go over raw sockets so duplicate headers, any method,
any path and any bytes can be sent. What is generated:

* bodies: arbitrary JSON values (huge integers, NaN, odd unicode, lone surrogates), nesting up to 1100
  deep at any key, raw non-JSON bytes, and API-shaped bodies where every key a parser reads (`model`,
  `stream`, `messages`, `input`, `system`, `instructions`, content parts, `routing_preferences`,
  `routing_policy`) may hold the right type, a wrong one, or many long entries;
* headers: `x-model-affinity` / `x-session-id` empty, long or odd, `traceparent` garbage, `x-plano-*`,
  `x-envoy-*`, duplicate and mixed-case credentials, odd `content-type`, long `x-request-id`, up to Envoy's
  own limits (60 KiB, 100 headers; past them: a 431 in the API's shape, tested below); bodies sent chunked too;
* methods and paths: the six endpoints (with queries), `/v1/models`, unknown and malformed paths.

The known issue-9 bodies (nesting 255-1100 deep, a content part typed `[]`, 33 `routing_policy` entries
sharing a name, integers beyond 64 bits, Claude Code's body) are always sent, as are the regressions the
fuzzing found.

The error shape: OpenAI's `{"error": {"message": str, "type": str}}` on /v1/chat/completions and
/v1/responses (and their /routing twins), Anthropic's `{"type": "error", "error": {"type": str, "message":
str}}` on /v1/messages and /routing/v1/messages; paths no API owns may answer in either shape.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from tests.conftest import DEMO_CONFIG
from tests.harness import CLAUDE, CODE, FRANCE, REASONING

pytestmark = pytest.mark.integration

#: a request that takes longer than this hangs (the demo listener's own timeout is 30 s)
CLIENT_TIMEOUT_S = 20.0

OPENAI_PATHS = ("/v1/chat/completions", "/v1/responses", "/routing/v1/chat/completions", "/routing/v1/responses")
ANTHROPIC_PATHS = ("/v1/messages", "/routing/v1/messages")
ENDPOINTS = OPENAI_PATHS + ANTHROPIC_PATHS

FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), database=None)


@pytest.fixture(scope="module")
def fuzz_gw():
    from tests.harness import RunningGateway

    running = RunningGateway(DEMO_CONFIG.read_text())
    yield running
    running.close()


# ------------------------------------------------------------------------------------------- the client


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class Dropped(AssertionError):
    """The gateway closed or reset the connection without a whole answer, or never answered."""


def exchange(port: int, method: str, path: str, headers: list[tuple[str, str]], body: bytes | None, chunk: int = 0) -> Answer:
    """One request on its own connection; `chunk` > 0 sends the body chunked, `chunk` bytes a chunk."""
    head = [f"{method} {path} HTTP/1.1", f"host: 127.0.0.1:{port}", "connection: close"]
    head += [f"{k}: {v}" for k, v in headers]
    if body is not None and chunk > 0:
        head.append("transfer-encoding: chunked")
        body = b"".join(b"%x\r\n%s\r\n" % (len(body[i : i + chunk]), body[i : i + chunk]) for i in range(0, len(body), chunk)) + b"0\r\n\r\n"
    elif body is not None:
        head.append(f"content-length: {len(body)}")
    data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_S) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # Envoy may answer (413, 431) and close before reading everything: the answer is what counts
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except TimeoutError:
            raise Dropped(f"no whole answer within {CLIENT_TIMEOUT_S:g} s; got {b''.join(chunks)[:300]!r}") from None
        except ConnectionResetError:
            # Envoy may answer before reading the whole body (a 404 for a path it serves nothing on) and then
            # close with the rest unread: the kernel resets the connection after the answer. Acceptable once
            # the whole answer has arrived; a reset before that is a dropped request.
            try:
                return parse_answer(b"".join(chunks), method, complete=True)
            except Dropped:
                raise Dropped(f"connection reset; got {b''.join(chunks)[:300]!r}") from None
    return parse_answer(b"".join(chunks), method)


def parse_answer(raw: bytes, method: str, complete: bool = False) -> Answer:
    """The answer in `raw`; `complete`: only a body whose end is known (length or last chunk) counts."""
    while raw.startswith(b"HTTP/1.1 100 "):  # an interim answer to `expect: 100-continue`
        raw = raw.partition(b"\r\n\r\n")[2]
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep or not head.startswith(b"HTTP/1.1 "):
        raise Dropped(f"no HTTP answer: {raw[:300]!r}")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
    fields = dict(headers)
    if method == "HEAD" or status in (204, 304):
        return Answer(status, headers, b"")
    if "chunked" in fields.get("transfer-encoding", ""):
        body = b""
        while True:
            size_line, sep, rest = rest.partition(b"\r\n")
            if not sep:
                raise Dropped(f"chunked body cut off: {raw[-300:]!r}")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            body, rest = body + rest[:size], rest[size + 2 :]
        return Answer(status, headers, body)
    if "content-length" in fields:
        length = int(fields["content-length"])
        if len(rest) < length:
            raise Dropped(f"body cut off at {len(rest)} of {length} bytes: {rest[:300]!r}")
        return Answer(status, headers, rest[:length])
    if complete:
        raise Dropped(f"a body without a length, cut by a reset: {rest[:300]!r}")
    return Answer(status, headers, rest)


# --------------------------------------------------------------------------------------------- the oracle


def is_openai_error(body: object) -> bool:
    err = body.get("error") if isinstance(body, dict) else None
    return isinstance(err, dict) and isinstance(err.get("message"), str) and isinstance(err.get("type"), str)


def is_anthropic_error(body: object) -> bool:
    if not isinstance(body, dict) or body.get("type") != "error":
        return False
    err = body.get("error")
    return isinstance(err, dict) and isinstance(err.get("type"), str) and isinstance(err.get("message"), str)


def check(answer: Answer, method: str, path: str, fuzzing: bool = True) -> None:
    if fuzzing:  # the spread of outcomes: pytest --hypothesis-show-statistics
        event(f"status {answer.status} {path.split('?', 1)[0][:40]}")
    where = f"{method} {path[:120]}"
    if 200 <= answer.status < 300:
        return
    assert 400 <= answer.status < 500, f"{where}: status {answer.status}, body {answer.body[:400]!r}"
    if method == "HEAD":
        return  # no body to judge
    try:
        body = json.loads(answer.body)
    except ValueError:
        raise AssertionError(f"{where}: {answer.status} with a non-JSON body {answer.body[:400]!r}") from None
    bare = path.split("?", 1)[0]
    if bare in ANTHROPIC_PATHS:
        ok = is_anthropic_error(body)
    elif bare in OPENAI_PATHS:
        ok = is_openai_error(body)
    else:
        ok = is_openai_error(body) or is_anthropic_error(body)
    assert ok, f"{where}: {answer.status} not in the API's error shape: {answer.body[:400]!r}"


# ----------------------------------------------------------------------------------------- the strategies

ODD_STRINGS = ["", " ", "\x00", "\U0001f600", "\u202e", "e\u0301", "\ufeff", "\uffff", "\u2028", "null",
               "gpt-4o", "openai/gpt-4o", "anthropic/" + CLAUDE, "../../etc/passwd", "%s%n", "{}", "\\", '"']
odd_text = st.one_of(st.text(max_size=40), st.sampled_from(ODD_STRINGS), st.sampled_from([CODE, FRANCE, REASONING]))
#: beyond 64 bits: must survive the body rewrite or be a clean 4xx, never a float or a 500
huge_ints = st.one_of(st.integers(min_value=2**63, max_value=2**300), st.integers(min_value=-(2**300), max_value=-(2**63) - 1),
                      st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**30, -(10**200)]))
scalars = st.one_of(st.none(), st.booleans(), st.integers(), huge_ints, st.floats(allow_nan=False, allow_infinity=False), odd_text)
#: not JSON at all, or not UTF-8 once encoded: lone surrogates, NaN, infinities; and an integer past ~1.8e308,
#: which orjson cannot parse (a 400 "not valid JSON" although it is valid JSON)
not_quite_json = st.sampled_from(["\ud800", "x\udfff", float("nan"), float("inf"), -float("inf"), 10**400])
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4), max_leaves=12)
MODELS = ["gpt-4o", "gpt-4o-mini", "openai/gpt-4o", CLAUDE, "anthropic/" + CLAUDE, "fast-model", "smart-model", "no-such-model", ""]
model_values = st.one_of(st.sampled_from(MODELS), json_values)


@st.composite
def long_text(draw, max_len: int = 6000) -> str:
    """A long string without spending hypothesis' entropy on every character."""
    piece = draw(st.sampled_from(["x", "code, ", "éà", "\U0001f600", "a, b; c or d and ", "\u0000"]))
    return piece * draw(st.integers(0, max_len // len(piece)))


@st.composite
def deep(draw, leaf: object = None) -> str:
    """JSON text nested `depth` deep (up to 1100), arrays or objects, as text to splice into a body."""
    depth = draw(st.one_of(st.integers(1, 1100), st.sampled_from([127, 128, 254, 255, 256, 511, 512, 1023, 1024, 1025, 1100])))
    inner = json.dumps(leaf)
    if draw(st.booleans()):
        return "[" * depth + inner + "]" * depth
    return '{"a":' * depth + inner + "}" * depth


PART_TYPES = ["text", "input_text", "output_text", "image_url", "image", "tool_result", "tool_use", "document", "thinking", "refusal", ""]


@st.composite
def content(draw) -> object:
    part = st.fixed_dictionaries(
        {"type": st.one_of(st.sampled_from(PART_TYPES), json_values)},
        optional={"text": st.one_of(odd_text, long_text(), json_values), "content": json_values, "image_url": json_values, "source": json_values},
    )
    return draw(st.one_of(odd_text, long_text(), st.lists(st.one_of(part, json_values), max_size=5), json_values))


ROLES = ["user", "assistant", "system", "developer", "tool", "function", "model", "USER", "", "\U0001f600"]


@st.composite
def message(draw) -> object:
    if draw(st.integers(0, 9)) == 9:
        return draw(json_values)
    msg = {"role": draw(st.one_of(st.sampled_from(ROLES), json_values)), "content": draw(content())}
    for key in draw(st.lists(st.sampled_from(["name", "tool_calls", "tool_call_id", "cache_control", "role", "content"]), max_size=2)):
        msg[key] = draw(json_values)
    return msg


@st.composite
def many(draw, element: st.SearchStrategy[dict], most: int = 80) -> list[dict]:
    """Up to `most` entries: drawn ones, or one drawn entry repeated with or without distinct names."""
    if draw(st.booleans()):
        return draw(st.lists(element, max_size=4))
    one = draw(element)
    count = draw(st.integers(0, most))
    if draw(st.booleans()) and isinstance(one.get("name"), str):
        return [{**one, "name": f"{one['name']}{i}"} for i in range(count)]
    return [one] * count


def route_entry(lenient: bool) -> st.SearchStrategy[dict]:
    """One inline route: within the documented limits, or (lenient) any type and size at every key."""
    if not lenient:
        return st.fixed_dictionaries(
            {"name": st.text(min_size=1, max_size=20), "description": st.one_of(st.text(min_size=1, max_size=60), long_text(4096).filter(bool)),
             "models": st.lists(st.sampled_from(MODELS[:-1]), min_size=1, max_size=4)},
            optional={"examples": st.lists(st.text(min_size=1, max_size=80), max_size=3)},
        )
    return st.fixed_dictionaries(
        {"name": st.one_of(odd_text, long_text(400), json_values), "description": st.one_of(odd_text, long_text(), json_values),
         "models": st.one_of(st.lists(model_values, max_size=5), st.lists(st.sampled_from(MODELS), min_size=30, max_size=40), json_values)},
        optional={"examples": st.one_of(st.lists(st.one_of(odd_text, long_text(3000)), max_size=40), json_values), "extra": json_values},
    )


def legacy_entry(lenient: bool) -> st.SearchStrategy[dict]:
    if not lenient:
        legacy = st.fixed_dictionaries({"name": st.text(min_size=1, max_size=20), "description": st.text(min_size=1, max_size=60)})
        return st.fixed_dictionaries({"model": st.sampled_from(MODELS[:-1]), "routing_preferences": st.lists(legacy, min_size=1, max_size=3)})
    legacy = st.fixed_dictionaries({"name": st.one_of(odd_text, json_values), "description": st.one_of(odd_text, long_text(5000), json_values)})
    return st.fixed_dictionaries({"model": model_values, "routing_preferences": st.one_of(many(legacy, 70), json_values)})


#: the keys a parser reads, and what a well-typed value for each looks like; content is read liberally, so any
#: list of anything is a well-typed `messages`
def well_typed(key: str) -> st.SearchStrategy[object]:
    return {
        "model": st.sampled_from(MODELS),
        "stream": st.one_of(st.booleans(), st.none()),
        "messages": st.lists(message(), min_size=1, max_size=6),
        "input": st.one_of(odd_text, long_text(), st.lists(message(), max_size=5)),
        "system": st.one_of(odd_text, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": odd_text}), max_size=2), json_values),
        "instructions": st.one_of(odd_text, json_values),
        "max_tokens": st.one_of(st.integers(1, 4096), huge_ints),
        "routing_preferences": st.lists(route_entry(False), min_size=1, max_size=5).filter(lambda r: len({x["name"] for x in r}) == len(r)),
        "routing_policy": st.lists(legacy_entry(False), min_size=1, max_size=3),
    }[key]


def hostile(key: str) -> st.SearchStrategy[object]:
    """A wrong type, a huge number, a long list or a long string at `key`."""
    options = [json_values, huge_ints, long_text(), not_quite_json]
    if key == "routing_preferences":
        options += [many(route_entry(True), 80), many(route_entry(False), 80)]
    elif key == "routing_policy":
        options += [many(legacy_entry(True), 80), many(legacy_entry(False), 80)]
    elif key in ("messages", "input"):
        options += [st.lists(message(), min_size=30, max_size=60)]
    return st.one_of(options)


@st.composite
def api_body(draw, path: str) -> bytes:
    """A body shaped like `path`'s API: well-typed keys (with odd values: unicode, huge integers in fields the
    gateway does not read, liberal content), of which 0-2 are replaced by hostile values, maybe a deep value
    spliced in, maybe inline routes."""
    anthropic = path.endswith("/messages")
    keys = ["model", "stream", "input", "instructions"] if path.endswith("/responses") else ["model", "stream", "messages"]
    if anthropic:
        keys += ["system", "max_tokens"]
    inline = draw(st.sampled_from([(), (), (), ("routing_preferences",), ("routing_preferences",), ("routing_policy",), ("routing_preferences", "routing_policy")]))
    body: dict[str, object] = {}
    for key in keys + list(inline):
        if key in ("model", "stream", "instructions", "system") and not draw(st.integers(0, 3)):
            continue  # optional keys, sometimes absent (and a required one, rarely: a 400)
        body[key] = draw(well_typed(key))
    if draw(st.integers(0, 9)) == 9:
        body.pop(keys[2], None)
    for key in draw(st.lists(st.sampled_from([*keys, "routing_preferences", "routing_policy"]), max_size=2, unique=True)):
        body[key] = draw(hostile(key))
    for key in draw(st.lists(st.sampled_from(["tools", "metadata", "temperature", "stream_options", "user", "n", "context_management"]), max_size=2)):
        body[key] = draw(st.one_of(json_values, huge_ints))
    text = json.dumps(body, ensure_ascii=draw(st.booleans()), allow_nan=True)
    if draw(st.integers(0, 3)) == 3:
        # a deep value spliced in first (a duplicate key wins over it) at a key the parsers read, or a new one
        key = draw(st.sampled_from(["model", "messages", "input", "system", "stream", "routing_preferences", "routing_policy", "metadata"]))
        spliced = f'"{key}": {draw(deep(draw(scalars)))}'
        text = "{" + spliced + ("," + text[1:] if text != "{}" else "}")
    if draw(st.integers(0, 19)) == 19:
        text = text + draw(st.sampled_from(["," + text, " ", "\x00", "}"]))  # trailing data
    return text.encode("utf-8", "surrogatepass")


@st.composite
def any_body(draw, path: str) -> bytes:
    kind = draw(st.integers(0, 9))
    if kind == 7:
        return draw(st.binary(max_size=300))
    if kind == 8:
        return json.dumps(draw(json_values)).encode()
    if kind == 9:
        return draw(deep(draw(scalars))).encode()
    return draw(api_body(path))


HEADER_VALUE = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=60)
TRACEPARENTS = ["00-" + "0" * 32 + "-" + "0" * 16 + "-01", "00-" + "a" * 32 + "-" + "b" * 16 + "-01", "ff-" + "a" * 32 + "-" + "b" * 16 + "-01",
                "00-xyz-abc-01", "00-" + "A" * 32 + "-" + "B" * 16 + "-01", "-", "00-" + "a" * 33 + "-" + "b" * 16 + "-01-extra"]


@st.composite
def odd_headers(draw) -> list[tuple[str, str]]:
    pool = [
        ("x-model-affinity", st.one_of(st.just(""), HEADER_VALUE, st.builds(lambda n: "s" * n, st.integers(200, 8000)))),
        ("x-session-id", st.one_of(st.just(""), HEADER_VALUE)),
        ("traceparent", st.one_of(st.sampled_from(TRACEPARENTS), HEADER_VALUE)),
        ("tracestate", HEADER_VALUE),
        ("x-plano-cluster", st.one_of(st.just("ranked.openai-gpt-4o"), HEADER_VALUE)),
        ("x-plano-route", HEADER_VALUE),
        ("x-plano-first-attempt", HEADER_VALUE),
        ("x-envoy-max-retries", st.sampled_from(["0", "100", "-1", "x"])),
        ("x-envoy-upstream-rq-timeout-ms", st.sampled_from(["1", "0", "99999999999"])),
        ("x-envoy-retry-on", st.just("5xx,reset")),
        ("x-envoy-original-path", st.just("/evil")),
        ("x-envoy-force-trace", st.just("true")),
        ("authorization", st.sampled_from(["Bearer client-key", "Bearer", "", "Basic Zm9vOmJhcg=="])),
        ("Authorization", st.just("Bearer second-client-key")),
        ("x-api-key", HEADER_VALUE),
        ("X-Api-Key", HEADER_VALUE),
        ("api-key", HEADER_VALUE),
        ("content-type", st.sampled_from(["text/plain", "application/json; charset=latin-1", "multipart/form-data", "", "application/x-ndjson"])),
        ("x-request-id", st.one_of(HEADER_VALUE, st.builds(lambda n: "r" * n, st.integers(100, 20000)))),
        ("anthropic-version", HEADER_VALUE),
        ("anthropic-beta", HEADER_VALUE),
        ("accept-encoding", st.sampled_from(["gzip", "br", "identity;q=0", "*"])),
        ("expect", st.just("100-continue")),
        # up to Envoy's own 60 KiB of headers (past it: test_headers_past_envoys_limits_get_a_431_in_the_apis_shape)
        ("x-filler", st.builds(lambda n: "f" * n, st.integers(30_000, 61_000))),
    ]
    out = []
    for index in draw(st.lists(st.integers(0, len(pool) - 1), max_size=6, unique=True)):
        name, values = pool[index]
        out.append((name, draw(values)))
    if draw(st.integers(0, 9)) == 9:  # many headers, still under Envoy's 100
        out += [(f"x-many-{i}", "v") for i in range(draw(st.integers(60, 88)))]
    return out


QUERIES = ["", "", "", "?beta=true", "?a=%ZZ", "?" + "q" * 3000, "?stream=true&model=gpt-4o"]
ODD_PATHS = ["/v1/models", "/v1/nope", "/", "/v1/", "/routing/v1/", "/v1/messages/batches", "/v1/chat/completions/", "//v1/messages",
             "/v1/../v1/messages", "/v1/messages%00", "/V1/CHAT/COMPLETIONS", "/v1/chat%2fcompletions", "/routing/v1/nope",
             "/" + "p" * 9000, "/v1/messages;x=y", "/healthz", "/v1/embeddings"]


# ---------------------------------------------------------------------------------------------- the tests


def within_envoys_limits(path: str, headers: list[tuple[str, str]]) -> None:
    """Requests past Envoy's own header limits (60 KiB, 100 headers) are the known failure of
    test_headers_past_envoys_limits_get_a_431_in_the_apis_shape: not generated here (with a margin)."""
    assume(len(path) + sum(len(k) + len(v) for k, v in headers) < 60_000 and len(headers) < 94)


@settings(FUZZ, max_examples=110)
@given(data=st.data(), path=st.sampled_from(ENDPOINTS), query=st.sampled_from(QUERIES))
def test_fuzzed_bodies_get_a_2xx_or_the_apis_4xx(fuzz_gw, data, path, query):
    body = data.draw(any_body(path), label="body")
    headers = data.draw(st.one_of(st.just([]), odd_headers()), label="headers")
    chunk = data.draw(st.sampled_from([0, 0, 0, 1, 7, 4096]), label="chunked")
    full = path + query
    within_envoys_limits(full, headers)
    check(exchange(fuzz_gw.gateway.listener_port, "POST", full, headers, body, chunk), "POST", full)


@settings(FUZZ, max_examples=40)
@given(
    data=st.data(),
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "PROPFIND"]),
    path=st.one_of(st.sampled_from(ENDPOINTS), st.sampled_from(ODD_PATHS)),
    query=st.sampled_from(QUERIES),
)
def test_fuzzed_methods_paths_and_headers_get_a_2xx_or_a_4xx_error(fuzz_gw, data, method, path, query):
    headers = data.draw(odd_headers(), label="headers")
    body = data.draw(st.one_of(st.none(), any_body(path if path in ENDPOINTS else "/v1/chat/completions")), label="body")
    full = path + query
    within_envoys_limits(full, headers)
    check(exchange(fuzz_gw.gateway.listener_port, method, full, headers, body), method, full)


def _chat(content: object, **extra: object) -> bytes:
    return json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}).encode()


SHARED = [{"model": "gpt-4o", "routing_preferences": [{"name": "same", "description": "code"}]}] * 33
#: what broke before (issue 9, item 4) and what the fuzzing is most likely to miss, always sent
KNOWN = [
    ("deep_255", "/v1/chat/completions", _chat("x", metadata=json.loads("[" * 255 + "]" * 255))),
    ("deep_256", "/v1/chat/completions", _chat("x", metadata=json.loads("[" * 256 + "]" * 256), routing_preferences=[{"name": "a", "description": "b", "models": ["gpt-4o"]}])),
    ("deep_1024", "/v1/messages", b'{"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "metadata": ' + b"[" * 1023 + b"]" * 1023 + b"}"),
    ("deep_1100", "/v1/responses", b'{"input": ' + b"[" * 1100 + b"]" * 1100 + b"}"),
    ("part_type_list", "/v1/chat/completions", _chat([{"type": []}, {"type": {}, "text": []}])),
    ("part_type_list_anthropic", "/v1/messages", json.dumps({"model": CLAUDE, "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": []}]}]}).encode()),
    ("policy_33_shared", "/routing/v1/chat/completions", _chat(CODE, routing_policy=SHARED)),
    ("huge_int", "/v1/chat/completions", _chat("x", seed=2**64, routing_preferences=[{"name": "a", "description": "b", "models": ["gpt-4o-mini"]}])),
    # found by the fuzzing in CI: forwarded as sent (the provider judges its own API); the stand-in provider
    # hung up on it (a 503 after the retries) where a real one answers 400
    ("tools_not_a_list", "/v1/responses", b'{"input": "", "tools": 9223372036854775808}'),
    ("claude_code", "/v1/messages?beta=true", json.dumps({
        "model": "gpt-4o-mini", "max_tokens": 5, "context_management": {"edits": []}, "output_config": {"effort": "low"},
        "messages": [{"role": "system", "content": "You are Claude Code"}, {"role": "user", "content": [{"type": "text", "text": CODE}]}]}).encode()),
]


@pytest.mark.parametrize(("label", "path", "body"), KNOWN, ids=[k[0] for k in KNOWN])
def test_known_hostile_bodies_get_a_2xx_or_the_apis_4xx(fuzz_gw, label, path, body):
    check(exchange(fuzz_gw.gateway.listener_port, "POST", path, [], body), "POST", path, fuzzing=False)


def test_integers_beyond_64_bits_reach_the_provider_exactly(fuzz_gw):
    marker = "exact-integer-probe"
    body = _chat(marker, seed=2**64 + 1, logit_bias={"1": -(10**30)}, routing_preferences=[{"name": "a", "description": "b", "models": ["gpt-4o-mini"]}])
    answer = exchange(fuzz_gw.gateway.listener_port, "POST", "/v1/chat/completions", [], body)
    assert answer.status == 200, answer.body
    (seen,) = [r for r in fuzz_gw.openai_mock.requests_snapshot() if marker.encode() in r["raw"]]
    assert b"18446744073709551617" in seen["raw"] and b"-1000000000000000000000000000000" in seen["raw"]
    assert b"routing_preferences" not in seen["raw"]


def test_numbers_beyond_a_double_are_valid_json_and_reach_the_provider_as_sent(fuzz_gw):
    marker = "huge-number-probe"
    body = _chat(marker).replace(b'"messages"', b'"metadata_score": 1e400, "other": -2.5E+999, "messages"', 1)
    answer = exchange(fuzz_gw.gateway.listener_port, "POST", "/v1/chat/completions", [], body)
    assert answer.status == 200, answer.body
    (seen,) = [r for r in fuzz_gw.openai_mock.requests_snapshot() if marker.encode() in r["raw"]]
    assert b'"metadata_score": 1e400' in seen["raw"] and b'"other": -2.5E+999' in seen["raw"]


FRANCE_CHAT = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": FRANCE}]}).encode()
FRANCE_CLAUDE = json.dumps({"model": CLAUDE, "max_tokens": 5, "messages": [{"role": "user", "content": FRANCE}]}).encode()


@pytest.mark.parametrize(
    ("path", "headers", "body"),
    [
        ("/v1/chat/completions", [("x-filler", "f" * 61_000)], FRANCE_CHAT),
        ("/v1/messages", [("x-filler", "f" * 61_000)], FRANCE_CLAUDE),
        ("/v1/responses", [(f"x-many-{i}", "v") for i in range(90)], b'{"model": "gpt-4o", "input": "hi"}'),
    ],
    ids=["61000_bytes_chat", "61000_bytes_messages", "90_headers_responses"],
)
def test_headers_just_under_envoys_limits_get_a_431_in_the_apis_shape(fuzz_gw, path, headers, body):
    """Found by the fuzzing: headers Envoy accepted but that left no room for the processors' own headers
    failed the proxied request with Envoy's 500 (header_mutation_result_exceeds_limit)."""
    answer = exchange(fuzz_gw.gateway.listener_port, "POST", path, headers, body)
    assert answer.status == 431, answer.body
    check(answer, "POST", path, fuzzing=False)
    assert "headers are too large" in answer.body.decode()


def test_a_decision_needs_no_room_for_forwarding_headers(fuzz_gw):
    answer = exchange(fuzz_gw.gateway.listener_port, "POST", "/routing/v1/chat/completions", [(f"x-many-{i}", "v") for i in range(90)], FRANCE_CHAT)
    assert answer.status == 200 and json.loads(answer.body)["model"] == "openai/gpt-4o-mini"


@pytest.mark.parametrize("headers", [[("x-filler", "f" * 70_000)], [(f"x-many-{i}", "v") for i in range(101)]], ids=["70000_bytes", "101_headers"])
def test_headers_past_envoys_limits_get_a_431_in_the_apis_shape(fuzz_gw, headers):
    answer = exchange(fuzz_gw.gateway.listener_port, "POST", "/v1/messages", headers, FRANCE_CLAUDE)
    assert answer.status == 431
    # Envoy rejects these before it has a header map, so its reply cannot depend on the path: an error in
    # one of the APIs' shapes (the default API's), never a closed connection (docs/envoy.md finding (x))
    check(answer, "POST", "/unparsed", fuzzing=False)


def test_the_gateway_still_answers_after_the_fuzzing(fuzz_gw):
    """The examples above left nothing broken behind them: a plain request is served as before."""
    body = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": FRANCE}]}).encode()
    answer = exchange(fuzz_gw.gateway.listener_port, "POST", "/v1/chat/completions", [("content-type", "application/json")], body)
    assert answer.status == 200
    assert json.loads(answer.body)["choices"][0]["message"]["content"] == "mock-openai answered as gpt-4o-mini"


@pytest.mark.parametrize("name", ["\x1f", "x\x00y", "a\r\nb", "\x7f", "é 中文\tok"])
def test_an_inline_route_named_with_any_characters_is_routed_and_proxied(fuzz_gw, name):
    """Found by the fuzzing: an inline route whose name held a control character was chosen, then the
    informational route header Envoy refuses such a value in failed the request with a 500."""
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": CODE}],
            "routing_preferences": [{"name": name, "description": "code generation: writing python functions and algorithms", "models": ["gpt-4o"]}]}
    raw = json.dumps(body).encode()
    port = fuzz_gw.gateway.listener_port
    decision = exchange(port, "POST", "/routing/v1/chat/completions", [], raw)
    assert decision.status == 200 and json.loads(decision.body)["route"] == name
    answer = exchange(port, "POST", "/v1/chat/completions", [], raw)
    assert answer.status == 200, answer.body
    assert json.loads(answer.body)["choices"][0]["message"]["content"] == "mock-openai answered as gpt-4o"
