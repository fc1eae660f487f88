"""Learning from the primary router: after the primary answered for a while and then fails, the embedded
fallback decides like the primary did — with a stand-in primary that answers labels."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from plano_extproc.conversation import Turn
from plano_extproc.router.base import RouterBackend, RouterError, RouteSpec
from plano_extproc.router.chain import RouterChain
from plano_extproc.router.embedded import EmbeddedRouter
from plano_extproc.router.learned import LearnedExamples
from plano_extproc.router.minilm import MiniLMEncoder

# Route descriptions that tell the embedded router nothing: only what the primary answers does.
ROUTES = [RouteSpec("team_a", "requests handled by team A"), RouteSpec("team_b", "requests handled by team B")]
TEAM_A = [  # cooking
    "how long should I roast a whole chicken", "what can I use instead of buttermilk in pancakes",
    "give me a recipe for vegetable lasagna", "how do I know when pasta is al dente", "what temperature do I bake salmon at",
    "how much rice do I need for four people", "how do I make a sourdough starter", "what spices go into a curry",
]
TEAM_B = [  # cars
    "my tire pressure light just came on", "how often should I change the oil in my car",
    "the engine makes a clicking noise when I start it", "what does the check engine light mean",
    "how do I jump start a dead battery", "is it bad to drive with worn brake pads", "why is my car overheating",
    "when should I replace my windshield wipers",
]
NONE = ["Who painted the Sistine Chapel ceiling?", "What is the tallest mountain in Europe?", "Why is the sky blue?", "Who wrote Hamlet?"]
HELD_OUT = {
    "what goes well with roast lamb for dinner": "team_a", "how do I caramelize onions": "team_a",
    "can I freeze cooked rice": "team_a", "my car battery keeps dying overnight": "team_b",
    "the brakes squeal when I stop": "team_b", "how do I check my transmission fluid": "team_b",
    "Who discovered penicillin?": None, "What is the capital of Peru?": None,
}


class LabelPrimary(RouterBackend):
    name = "stand-in"

    def __init__(self, labels: dict[str, str | None]) -> None:
        self.labels, self.stopped, self.calls = labels, False, 0

    async def choose_route(self, routes: Sequence[RouteSpec], conversation: Sequence[Turn]) -> str | None:
        self.calls += 1
        if self.stopped:
            raise RouterError("unavailable", "stopped")
        return self.labels[conversation[-1].content]


@pytest.fixture(scope="module")
def encoder() -> MiniLMEncoder:
    return MiniLMEncoder(backend="auto")


def labels() -> dict[str, str | None]:
    out: dict[str, str | None] = {t: "team_a" for t in TEAM_A} | {t: "team_b" for t in TEAM_B}
    return out | dict.fromkeys(NONE) | HELD_OUT


async def test_fallback_behaves_like_the_primary_after_it_stops(encoder: MiniLMEncoder) -> None:
    primary = LabelPrimary(labels())
    chain = RouterChain(primary, timeout_s=30.0, fallback=EmbeddedRouter(encoder=encoder))
    for text in TEAM_A + TEAM_B + NONE:
        outcome = await chain.choose(ROUTES, [Turn("user", text)])
        assert not outcome.failed and outcome.backend == "stand-in"
    primary.stopped = True
    got = {}
    for text in HELD_OUT:
        outcome = await chain.choose(ROUTES, [Turn("user", text)])
        assert outcome.failed and outcome.backend == "embedded"
        got[text] = outcome.route
    assert got == HELD_OUT
    # a fallback that never saw the primary cannot do this
    blind = EmbeddedRouter(encoder=encoder)
    assert [blind.choose_route_sync(ROUTES, [Turn("user", t)]) for t in HELD_OUT] != list(HELD_OUT.values())
    await chain.close()


async def test_only_real_primary_answers_teach(encoder: MiniLMEncoder) -> None:
    primary = LabelPrimary(labels())
    fallback = EmbeddedRouter(encoder=encoder)
    from plano_extproc.ttl_cache import TtlLruCache

    chain = RouterChain(primary, timeout_s=30.0, fallback=fallback, cache=TtlLruCache(60.0, 100))
    await chain.choose(ROUTES, [Turn("user", TEAM_A[0])])
    await chain.choose(ROUTES, [Turn("user", TEAM_A[0])])  # a cached replay: not a second lesson
    taught = fallback.learned.get(ROUTES)
    assert taught is not None and taught.snapshot()[1]["team_a"] == (TEAM_A[0],)
    primary.stopped = True
    await chain.choose(ROUTES, [Turn("user", TEAM_B[0])])  # a failure teaches nothing
    assert taught.snapshot()[1]["team_b"] == ()
    # lessons belong to their route set: another set of routes has none
    assert fallback.learned.get([RouteSpec("x", "y")]) is None
    await chain.close()


def test_lessons_are_bounded_and_a_uniform_sample() -> None:
    store = LearnedExamples(per_route=5, none=2, route_sets=2)
    for i in range(1000):
        store.add(ROUTES, f"request {i}", "team_a")
    for i in range(10):
        store.add(ROUTES, f"general {i}", None)
    store.add(ROUTES, "not a route name", "team_z")  # ignored: the primary cannot teach a route that is not there
    version, per_route, none = store.get(ROUTES).snapshot()
    assert len(per_route["team_a"]) == 5 and len(none) == 2 and per_route["team_b"] == ()
    # a uniform sample of the 1000, not the newest five (bursts of one kind would crowd out the rest)
    assert any(int(t.split()[1]) < 900 for t in per_route["team_a"])
    store.add(ROUTES, "x" * 100_000, "team_b")
    assert len(store.get(ROUTES).snapshot()[1]["team_b"][0]) < 3000
    for n in range(3):
        store.add([RouteSpec(f"s{n}", "d")], "hello", f"s{n}")
    assert len(store) == 2  # least recently taught route sets are dropped
