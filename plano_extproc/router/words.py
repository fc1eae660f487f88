"""The words of a text as the embedded router's lexical signal reads them: lower-case, English function
words and content-free request words dropped, one crude suffix stripped. Shared by the lexical signal
(embedded.py) and the language cue (languages.py), which must agree on what a stop word is."""

from __future__ import annotations

import re

#: English function words and content-free request words, ignored by the lexical signal.
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can cannot could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in into is
    it its itself me more most my myself no nor not of off on once only or other ought our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    im ive id ill youre youve youd youll hes shes its were theyre weve whats hows wheres whos
    dont doesnt didnt isnt arent wasnt werent cant couldnt wouldnt shouldnt wont havent hasnt
    please tell want need know like get give go make also just may might must shall let lets
    thanks thank okay ok hey hi hello pls""".split()
)
_WORD = re.compile(r"[a-z0-9]+")
_SUFFIXES = ("ational", "ations", "ation", "ings", "ing", "ions", "ion", "ments", "ment", "ness",
             "ers", "er", "ies", "ied", "es", "ed", "ly", "s")


def stem(word: str) -> str:
    """A deliberately crude suffix stripper: one suffix, stem of 3+ letters kept."""
    for suf in _SUFFIXES:
        if word.endswith(suf) and len(word) - len(suf) >= 3:
            return word[: -len(suf)] + ("y" if suf in ("ies", "ied") else "")
    return word


def words(text: str) -> list[str]:
    """The lower-cased words of `text`, apostrophes dropped ("don't" is "dont")."""
    return _WORD.findall(text.lower().replace("'", "").replace("\u2019", ""))


def content_stems(text: str) -> set[str]:
    """Lower-cased, stemmed content words of `text` (stopwords and 1-letter tokens dropped)."""
    return {stem(w) for w in words(text) if len(w) > 1 and w not in STOPWORDS}
