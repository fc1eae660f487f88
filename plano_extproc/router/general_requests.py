"""The packaged general requests: everyday questions and chit-chat that no specialised route is for.

The embedded router uses them twice, always relative to the route set at hand: without examples, the
"no route" bar of a route set is the similarity that `reject_share` of these requests do not reach; with
examples they are the "no route" class of the classifier. They were written for this project (not taken
from a benchmark) to span many topics; see docs/routing.md for how they were checked.
"""

from __future__ import annotations

import importlib.resources
from functools import lru_cache


@lru_cache(maxsize=1)
def general_requests() -> tuple[str, ...]:
    text = importlib.resources.files("plano_extproc.router").joinpath("data/general_requests.txt").read_text("utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
