"""Arch-Router's interface on the CPU: a Triton Python-backend model for development and CI.

Same tensors as the TensorRT-LLM ensemble (`text_input`, `max_tokens`, optional `end_id`, `pad_id`,
`top_k`, `temperature`, `exclude_input_in_output` -> `text_output`). The input is the rendered Qwen2.5
ChatML around the Arch-Router prompt (plano_extproc/router/prompt.py, docs/arch-router.md); this model recovers the
routes JSON between `<routes>` tags and the conversation JSON between `<conversation>` tags, asks the
embedded CPU router, and answers the way Arch-Router does: `{"route": "name"}` or `{"route": "other"}`.

The stub embeds Python in isolated mode (pybind11), so PYTHONPATH is ignored: `python -m
plano_devtools.triton_local` passes our venv's site-packages and the repo root in PLANO_TRITON_SYS_PATH
(os.pathsep-separated) and this file puts them first on sys.path (`site.addsitedir`, so the editable
install's .pth works). Without it, the repo root is derived from this file's location.
"""

from __future__ import annotations

import json
import os
import site
import sys
from pathlib import Path


def _extend_sys_path() -> None:
    wanted = [p for p in os.environ.get("PLANO_TRITON_SYS_PATH", "").split(os.pathsep) if p]
    wanted.append(str(Path(__file__).resolve().parents[3]))  # triton_models/arch_router_cpu/1/model.py -> repo
    before = list(sys.path)
    for path in wanted:
        if os.path.isdir(path):
            site.addsitedir(path)  # also runs the .pth files of a site-packages directory
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + [p for p in sys.path if p not in added]


_extend_sys_path()

import numpy as np  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402 - provided by the Python backend

from plano_extproc.conversation import Turn  # noqa: E402
from plano_extproc.router.base import RouteSpec  # noqa: E402
from plano_extproc.router.embedded import EmbeddedRouter  # noqa: E402
from plano_extproc.router.settings import EmbeddedRouterSettings  # noqa: E402

_ROUTES = ("<routes>\n", "\n</routes>")
_CONVERSATION = ("<conversation>\n", "\n</conversation>")


def _between(text: str, tags: tuple[str, str], start: int = 0) -> tuple[str, int]:
    """The text between the first `open` at or after `start` and the first `close` after it.

    JSON never holds a raw newline, so "\\n</routes>" cannot occur inside the routes or conversation JSON;
    the first `<routes>\\n` is the template's own (the system prompt comes before it and is fixed).
    """
    open_tag, close_tag = tags
    i = text.find(open_tag, start)
    if i < 0:
        raise ValueError(f"prompt has no {open_tag.strip()!r} section")
    i += len(open_tag)
    j = text.find(close_tag, i)
    if j < 0:
        raise ValueError(f"prompt has no {close_tag.strip()!r}")
    return text[i:j], j + len(close_tag)


def parse_prompt(text: str) -> tuple[list[RouteSpec], list[Turn]]:
    """Routes and conversation recovered from a rendered Arch-Router prompt."""
    routes_text, end = _between(text, _ROUTES)
    conversation_text, _ = _between(text, _CONVERSATION, end)
    routes = [RouteSpec(str(r["name"]), str(r.get("description", ""))) for r in json.loads(routes_text)]
    turns = [Turn(str(m.get("role", "user")), str(m.get("content", ""))) for m in json.loads(conversation_text)]
    return routes, turns


def _scalar(request, name: str, default):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return default
    return tensor.as_numpy().reshape(-1)[0]


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        raw = config.get("parameters", {}).get("embedded_settings", {}).get("string_value", "") or "{}"
        self.router = EmbeddedRouter(EmbeddedRouterSettings.model_validate(json.loads(raw)))
        self.router.warmup()
        self.logger = pb_utils.Logger

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                responses.append(self._one(request))
            except Exception as exc:  # one bad request must not fail the batch
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(f"arch_router_cpu: {exc}")))
        return responses

    def _one(self, request):
        raw = _scalar(request, "text_input", b"")
        text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        routes, turns = parse_prompt(text)
        route = self.router.choose_route_sync(routes, turns) if routes and turns else None
        reply = json.dumps({"route": route or "other"})
        if not bool(_scalar(request, "exclude_input_in_output", False)):
            reply = text + reply  # TensorRT-LLM echoes the prompt unless told not to
        out = np.array([[reply.encode("utf-8")]], dtype=np.object_)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("text_output", out)])

    def finalize(self):
        self.router = None
