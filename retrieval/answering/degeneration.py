"""Is a generated answer unfit to serve whatever its support? A loop, a repeated phrase, a half sentence cut by the
token budget, or a bare title.

The support check cannot see these: "Click Chase Chase Chase ..." has every word in the passage (the dev sets held 2
of 160 such answers served as `generated`). Detected answers are replaced by the extractive selection.
"""
from __future__ import annotations

import re

_WORD = re.compile(r"\w+")
_CITATION = re.compile(r"\s*\[\d{1,2}\]")
_ENDS_SENTENCE = re.compile(r"[.!?:)\"'”’]\s*$")
MIN_WORDS = 4            # fewer words with no sentence end: a label or title, not an answer
MAX_RUN = 3              # the same word this many times in a row is a loop
MAX_NGRAM_REPEATS = 3    # the same 3-word phrase this many times is a loop
MIN_DISTINCT_SHARE = 0.35   # in answers of 20+ words, fewer distinct words than this share is a loop


def degenerate_reason(text: str, titles: list[str] = (), hit_token_budget: bool = False) -> str | None:
    """Why ``text`` must not be served (``loop``, ``repetition``, ``truncated``, ``title``, ``empty``), or None.
    ``hit_token_budget``: the generator stopped at max_new_tokens rather than by choice."""
    plain = _CITATION.sub("", text).strip()
    words = [w.lower() for w in _WORD.findall(plain)]
    if not words:
        return "empty"
    run = 1
    for previous, word in zip(words, words[1:]):
        run = run + 1 if word == previous else 1
        if run >= MAX_RUN:
            return "loop"
    trigrams: dict[tuple[str, ...], int] = {}
    for i in range(len(words) - 2):
        key = tuple(words[i:i + 3])
        trigrams[key] = trigrams.get(key, 0) + 1
        if trigrams[key] >= MAX_NGRAM_REPEATS:
            return "repetition"
    if len(words) >= 20 and len(set(words)) / len(words) < MIN_DISTINCT_SHARE:
        return "repetition"
    if hit_token_budget and not _ENDS_SENTENCE.search(plain):
        return "truncated"
    normalised = " ".join(words)
    if any(normalised == " ".join(w.lower() for w in _WORD.findall(t)) for t in titles if t):
        return "title"
    if len(words) < MIN_WORDS and not _ENDS_SENTENCE.search(plain):
        return "title"
    return None
