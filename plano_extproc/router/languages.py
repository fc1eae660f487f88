"""Programming languages a request names, from Pygments' lexer table (a registry package, offline).

MiniLM-L6 does not know that "a React component" or "an endpoint in Rust" is code: such requests sit at
cosine ~0 to every description about code (docs/routing.md). The embedded router therefore gives a plain
request that *names a programming language as what to work in* the concept "code" (embedded.py). The
names are Pygments' lexer names and aliases (~600 languages and formats); many of them are also English
words or given names ("Go", "Rust", "Ruby", "Julia", "Swift", "Red"), so a name only counts where a
language name is used and a word or a person's name rarely is:

* spelled as a proper noun: the lexer's own spelling ("Python", "JavaScript", "C++") or an alias in title
  case ("React" for the JSX lexer's ``react``), starting with a capital; lower-case "python", "go" (and
  "teal", which Pygments spells so) never count. Two characters at least ("C", "R" and "S" are also
  letters, grades, variables);
* for a name that is a plain word (letters only): not the first word of a sentence, a line or a list item,
  where any word is capitalised, and not followed by another capitalised word, where it is part of a
  longer name ("Red Sea", "Julia Roberts");
* used as a tool: after "in" or "using" ("in Rust", "using Python"), or between a determiner and a
  lower-case word ("a React component", "the Go program"). "with", "to" and "for" were left out: they
  take people and places as often ("dinner with Julia", "a flight to Java").

What is missed on purpose: lower-case names, "Rust's borrow checker", "Is Go good for servers?",
"convert it to TypeScript". What still fires by mistake: a name used as a tool word in another sense
("prices in USD", "a hotel in Java"). English only, like the rest of the lexical signal.
"""

from __future__ import annotations

import re
from functools import lru_cache

from plano_extproc.router.words import STOPWORDS

#: Pygments modules whose lexers read no programs: plain text, text formats (logs, HTTP, gettext), e-mail
_NOT_CODE_MODULES = frozenset({"special", "textfmts", "email", "mime"})
#: words after which a language name is what the request is to be done in
_TOOL_WORDS = frozenset({"in", "using"})
#: words after which a language name followed by a lower-case word is an attribute ("a Python script")
_DETERMINERS = frozenset("a an the this that these those my your our their his her its some any each every".split())
#: quotes, brackets and punctuation around a word (a trailing one closes the phrase it ends)
_EDGES = re.compile(r"^[\"'(\[{\u201c\u2018`*_]+|[\"')\]}\u201d\u2019`*_,;:!?.]+$")
_CLOSES = frozenset(".!?,;:")


@lru_cache(maxsize=1)
def language_lexicon() -> tuple[frozenset[str], frozenset[str]]:
    """(lexer names as Pygments spells them, their aliases in lower case), without the lexers of plain
    text and text formats. Read from Pygments' lexer table (no lexer module is imported)."""
    from pygments.lexers._mapping import LEXERS

    names: set[str] = set()
    aliases: set[str] = set()
    for module, name, alias_list, _filenames, _mimetypes in LEXERS.values():
        if module.rsplit(".", 1)[-1] in _NOT_CODE_MODULES:
            continue
        if " " not in name:
            names.add(name)
        aliases.update(a for a in alias_list if a.isalpha() and a not in STOPWORDS)
    return frozenset(names), frozenset(aliases)


def language_mentions(text: str) -> list[str]:
    """The programming languages `text` names as what to work in (see the module docstring)."""
    names, aliases = language_lexicon()
    found: list[str] = []
    for line in text.splitlines():
        raw = line.split()
        for i, token in enumerate(raw):
            if token.islower():  # most words: no capital, so no proper noun (this runs over all that is read)
                continue
            word = _EDGES.sub("", token)
            if len(word) < 2 or not word[0].isupper() or not (
                word in names or (word.lower() in aliases and word == word.capitalize())
            ):
                continue
            prev = _EDGES.sub("", raw[i - 1]) if i and raw[i - 1][-1] not in _CLOSES else ""
            nxt = _EDGES.sub("", raw[i + 1]) if i + 1 < len(raw) and token[-1] not in _CLOSES else ""
            if word.isalpha() and (not prev or nxt[:1].isupper()):
                continue
            if prev.lower() in _TOOL_WORDS or (prev.lower() in _DETERMINERS and nxt[:1].islower() and nxt.isalpha()):
                found.append(word)
    return found
