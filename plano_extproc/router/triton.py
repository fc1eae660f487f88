"""Arch-Router served by NVIDIA Triton (TensorRT-LLM ensemble on a GPU, or `arch_router_cpu` on the CPU).

`routing.router: {backend: triton, url: host:8001, model: ensemble}` - `url` is Triton's gRPC address.
The client renders Qwen2.5 ChatML around the Arch-Router prompt (the ensemble applies no chat template)
and sends `text_input` + `max_tokens` and, when the model declares them, `end_id`, `pad_id`, `top_k`=1
(greedy) and `exclude_input_in_output`=true; it reads `text_output` and parses it with the shared parser.

One gRPC channel for the process (created on first use, on the running loop), an asyncio.Semaphore bound
on in-flight calls, a client deadline per call (RouterChain applies its own timeout around it), and errors
mapped to RouterError kinds: unavailable (cannot connect / server or model not ready), timeout (deadline),
error (anything else), bad_reply (from the parser).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from plano_extproc.config import RouterConfig
from plano_extproc.conversation import Turn
from plano_extproc.router.base import RouterBackend, RouterError, RouteSpec
from plano_extproc.router.prompt import (
    QWEN_EOS_TOKEN_ID,
    QWEN_PAD_TOKEN_ID,
    build_router_prompt,
    parse_router_reply,
    render_qwen_chatml,
)

log = logging.getLogger(__name__)

DEFAULT_URL = "127.0.0.1:8001"
DEFAULT_MODEL = "ensemble"
TEXT_INPUT, TEXT_OUTPUT = "text_input", "text_output"
REQUIRED_INPUTS = (TEXT_INPUT, "max_tokens")
#: Triton config data types -> (tritonclient datatype, numpy dtype)
_DTYPES: dict[str, tuple[str, Any]] = {
    "TYPE_STRING": ("BYTES", np.object_),
    "TYPE_BOOL": ("BOOL", np.bool_),
    "TYPE_INT32": ("INT32", np.int32),
    "TYPE_INT64": ("INT64", np.int64),
    "TYPE_UINT64": ("UINT64", np.uint64),
    "TYPE_FP32": ("FP32", np.float32),
}
#: gRPC status codes (as tritonclient reports them) that mean "the router is not there"
_UNAVAILABLE = ("StatusCode.UNAVAILABLE", "StatusCode.NOT_FOUND", "StatusCode.CANCELLED")
_TIMEOUT = ("StatusCode.DEADLINE_EXCEEDED",)


def grpc_target(url: str) -> tuple[str, bool]:
    """`host:port` and whether to use TLS, from `host:port`, `grpc://host:port` or `grpcs://host:port`."""
    for scheme, ssl in (("grpcs://", True), ("https://", True), ("grpc://", False), ("http://", False)):
        if url.startswith(scheme):
            return url[len(scheme) :].rstrip("/"), ssl
    return url.rstrip("/"), False


class _Input:
    """One declared model input: name, tritonclient datatype, numpy dtype and its shape per request."""

    def __init__(self, name: str, data_type: str, dims: Sequence[int], batched: bool) -> None:
        self.name = name
        self.datatype, self.np_dtype = _DTYPES.get(data_type, ("BYTES", np.object_))
        self.shape = ([1] if batched else []) + [1 if int(d) < 0 else int(d) for d in dims] or [1]


class TritonRouter(RouterBackend):
    name = "triton"

    def __init__(self, settings: RouterConfig, *, warm_up_wait_s: float = 5.0) -> None:
        self.settings = settings
        self.url, self.ssl = grpc_target(settings.url or DEFAULT_URL)
        self.model = settings.model or DEFAULT_MODEL
        if not settings.url or not settings.model:
            log.warning("routing.router (triton): url/model not set; using %s / %s", self.url, self.model)
        self.max_tokens = settings.triton.max_tokens
        self.client_timeout_s = settings.timeout_ms / 1000.0
        self.warm_up_wait_s = warm_up_wait_s
        self._semaphore = asyncio.Semaphore(settings.triton.max_concurrency)
        self._client: Any = None
        self._inputs: dict[str, _Input] | None = None  # from the model config, fetched once
        self._config_lock: asyncio.Lock | None = None
        #: calls that reached Triton and came back (observability and tests)
        self.calls = 0

    # -- connection ----------------------------------------------------------------------

    def _get_client(self) -> Any:
        if self._client is None:
            from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE
            from tritonclient.grpc import aio as grpcclient

            self._client = grpcclient.InferenceServerClient(
                self.url,
                ssl=self.ssl,
                channel_args=[
                    ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
                    ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
                    ("grpc.keepalive_time_ms", 30_000),
                    ("grpc.keepalive_timeout_ms", 10_000),
                    ("grpc.http2.max_pings_without_data", 0),
                    # a restarted Triton is found again within a second, not after gRPC's default
                    # exponential back-off (up to 120 s): the breaker's probe decides when to try
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1_000),
                ],
            )
        return self._client

    async def _model_inputs(self) -> dict[str, _Input]:
        """The model's declared inputs (fetched once; the optional sampling inputs are sent only if declared)."""
        if self._inputs is not None:
            return self._inputs
        if self._config_lock is None:
            self._config_lock = asyncio.Lock()
        async with self._config_lock:
            if self._inputs is None:
                reply = await self._call(
                    self._get_client().get_model_config(self.model, as_json=True, client_timeout=self.client_timeout_s)
                )
                config = reply.get("config", reply)
                batched = int(config.get("max_batch_size", 0) or 0) > 0
                inputs = {
                    i["name"]: _Input(i["name"], i.get("data_type", "TYPE_STRING"), i.get("dims", ["1"]), batched)
                    for i in config.get("input", [])
                }
                missing = [n for n in REQUIRED_INPUTS if n not in inputs]
                outputs = {o["name"] for o in config.get("output", [])}
                if missing or TEXT_OUTPUT not in outputs:
                    raise RouterError(
                        "error", f"triton model {self.model!r} lacks {missing or [TEXT_OUTPUT]}: not an Arch-Router model"
                    )
                self._inputs = inputs
        return self._inputs

    async def _call(self, awaitable: Any) -> Any:
        from tritonclient.utils import InferenceServerException

        try:
            return await awaitable
        except InferenceServerException as exc:
            status = str(exc.status() or "")
            if status in _TIMEOUT:
                raise RouterError("timeout", f"triton {self.url}: {exc.message()}") from None
            message = exc.message() or ""
            if status in _UNAVAILABLE or "not ready" in message or "unknown model" in message.lower():
                raise RouterError("unavailable", f"triton {self.url}: {status} {message}") from None
            raise RouterError("error", f"triton {self.url}: {status} {message}") from None
        except RouterError:
            raise
        except (ConnectionError, OSError) as exc:
            raise RouterError("unavailable", f"triton {self.url}: {exc}") from None

    # -- routing -------------------------------------------------------------------------

    def _tensors(self, inputs: dict[str, _Input], prompt: str) -> list[Any]:
        from tritonclient.grpc import InferInput

        values: dict[str, Any] = {
            TEXT_INPUT: prompt.encode("utf-8"),
            "max_tokens": self.max_tokens,
            "end_id": QWEN_EOS_TOKEN_ID,
            "pad_id": QWEN_PAD_TOKEN_ID,
            "top_k": 1,  # greedy
            "exclude_input_in_output": True,
        }
        tensors = []
        for name, value in values.items():
            spec = inputs.get(name)
            if spec is None:  # optional input this model does not declare
                continue
            tensor = InferInput(name, spec.shape, spec.datatype)
            tensor.set_data_from_numpy(np.full(spec.shape, value, dtype=spec.np_dtype))
            tensors.append(tensor)
        return tensors

    async def choose_route(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn]) -> str | None:
        if not routes or not conversation:
            return None
        prompt = render_qwen_chatml(build_router_prompt(routes, conversation, self.settings.prompt_max_tokens))
        async with self._semaphore:
            inputs = await self._model_inputs()
            result = await self._call(
                self._get_client().infer(
                    self.model, self._tensors(inputs, prompt), client_timeout=self.client_timeout_s
                )
            )
        self.calls += 1
        reply = _text_output(result)
        if reply.startswith(prompt):  # a model without exclude_input_in_output echoes the prompt
            reply = reply[len(prompt) :]
        return parse_router_reply(reply, frozenset(r.name for r in routes))

    # -- lifecycle -----------------------------------------------------------------------

    async def ready(self) -> bool:
        client = self._get_client()
        try:
            return bool(
                await client.is_server_ready(client_timeout=self.client_timeout_s)
                and await client.is_model_ready(self.model, client_timeout=self.client_timeout_s)
            )
        except Exception:
            return False

    async def warm_up(self, routes: Sequence[RouteSpec]) -> None:
        """Wait briefly for Triton, learn the model's inputs and send one call (on a GPU this puts the
        shared instructions+routes prefix in the KV cache). Triton being down never fails start-up."""
        deadline = time.monotonic() + self.warm_up_wait_s
        while not await self.ready():
            if time.monotonic() >= deadline:
                log.warning(
                    "triton router %s model %r not ready after %.1fs; starting anyway (fallback until it is)",
                    self.url, self.model, self.warm_up_wait_s,
                )
                return
            await asyncio.sleep(0.2)
        try:
            await self._model_inputs()
            if routes:
                await self.choose_route(routes, [Turn("user", "hello")])
        except RouterError as exc:
            log.warning("triton router warm-up failed (%s): %s", exc.kind, exc)
            return
        log.info("triton router ready: %s model %r", self.url, self.model)

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            try:
                await client.close()
            except Exception:
                log.debug("closing the triton client failed", exc_info=True)


def _text_output(result: Any) -> str:
    array = result.as_numpy(TEXT_OUTPUT)
    if array is None or array.size == 0:
        raise RouterError("bad_reply", "triton reply has no text_output")
    value = array.reshape(-1)[0]
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)
