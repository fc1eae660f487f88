"""Follow-ups and topic changes: does `follow_up` keep a conversation's route without dragging new topics?

Usage (from the repository root):

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD .venv/bin/python bench/follow_ups.py

Two-turn conversations built from an open benchmark (seeded draws): turn 1 is an in-scope case, the
assistant answers, turn 2 is either
* a follow-up phrase (expected: turn 1's route) from one of two lists written for this bench: TERSE
  (written together with `refers_back`'s word list) and WORDY (written afterwards, as a check on it), or
* another case of the set (a topic change; expected: that case's own label, null included).
Printed per set: follow-ups that keep the route, and topic changes still routed right, with `follow_up`
on and off. The ceiling for "keep" is how often turn 1 itself routes right.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from route_quality import DEFAULT_DATA, load  # noqa: E402

from plano_extproc.conversation import Turn  # noqa: E402
from plano_extproc.router.base import RouteSpec  # noqa: E402
from plano_extproc.router.embedded import EmbeddedRouter, refers_back  # noqa: E402

TERSE = ["now do it in Java", "make it shorter", "can you explain that again?", "add comments to it",
         "give me another one", "rewrite it in a more formal tone", "why?", "continue", "and in Rust?",
         "can you make it faster?", "shorter please", "what about the second one?", "do the same for this one too",
         "try again", "more detail please", "one more", "now in TypeScript", "explain the last step", "are you sure?",
         "ok, and then?"]
WORDY = ["translate the answer to French", "could you simplify your explanation", "what would change if n were negative",
         "put that in a table", "and for Python 2?", "I meant the other function", "fix the bug you just introduced",
         "expand on point 3", "summarize what you said", "is there a faster way?", "use a loop instead",
         "what about edge cases", "give an example", "make it rhyme", "without recursion please",
         "explain like I'm five", "can you double check", "list the steps", "compare it with the previous version",
         "do the same in C++"]


def main() -> int:
    for name in ("llm_tasks", "clinc_domains"):
        routes, cases = load(DEFAULT_DATA, name)
        specs = [RouteSpec(r["name"], r["description"]) for r in routes]
        in_scope = [c for c in cases if c["expected_route"]]
        fires = sum(refers_back(c["text"]) for c in cases) / len(cases)
        print(f"{name}: refers_back() fires on {fires:.3f} of the set's own (single-turn) requests")
        for phrases_name, phrases in (("TERSE", TERSE), ("WORDY", WORDY)):
            rng = random.Random(11)
            convs = []
            for _ in range(300):
                a, b = rng.choice(in_scope), rng.choice(cases)
                head = [Turn("user", a["text"]), Turn("assistant", "Here you go.")]
                convs.append((head + [Turn("user", rng.choice(phrases))], a["expected_route"],
                              head + [Turn("user", b["text"])], b["expected_route"], a))
            for on in (False, True):
                r = EmbeddedRouter(follow_up=on)
                keep = sum(r.choose_route_sync(specs, f) == e for f, e, *_ in convs) / len(convs)
                switch = sum(r.choose_route_sync(specs, s) == e for _, _, s, e, _ in convs) / len(convs)
                ceiling = sum(r.choose_route_sync(specs, [Turn("user", a["text"])]) == a["expected_route"]
                              for *_, a in convs) / len(convs)
                print(f"  {phrases_name:<5} follow_up={str(on):<5} follow-ups keep the route {keep:.3f} (turn 1 alone "
                      f"right {ceiling:.3f})   topic changes right {switch:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
