"""Is each answer sentence backed by the passages it cites? And, when it is not, an extractive answer instead.

Support is lexical: the share of a sentence's content words (stemmed) found in the cited passages.
It is cheap, needs no model, and catches the failure that matters most for a small generator:
details (names, numbers, steps) that appear in no passage. Threshold chosen on the tune split by
benchs/quality/answer_quality.py.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import Stemmer

_WORD = re.compile(r"[a-z0-9]+")
_NON_WORD = re.compile(r"[^a-z0-9]+")
# A sentence ends at . ! or ? (closing quotes and brackets stay with it) before a capital, digit or opening mark;
# also with no space when a word ends it and a capitalised word follows: the glued sentences of scraped HTML
# ("for all users.You can start"), not "e.g.The" (one letter), "U.S.A" or "kbqa.io"; and a callout label glued to
# its text ("Important:Wix Stores ..."), not "10:30" or "https://".
_SENTENCE = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\]]))\s+(?=[A-Z0-9\"'(\[])|(?<=[a-z]{2}[.!?])(?=[A-Z][a-z])"
                       r"|(?<=[A-Za-z]{3}:)(?=[A-Z][a-z])")
_CITATION = re.compile(r"\s*\[\d{1,2}\]")
_STOP = frozenset("""a an the and or but of to in on at for with from by as is are was were be been being it its
this that these those you your yours we our i me my he she they them their there here can could will would should
may might must do does did done have has had not no yes if then than so such how what when where which who why all
any each some more most other into out up down over about also just only very too please click select go""".split())
_STEMMER = Stemmer.Stemmer("english")

MIN_FACT_WORDS = 3  # a sentence with fewer content words ("Yes.", "See below.") states no checkable fact


def normalised(text: str) -> str:
    """Lower case, runs of anything but letters and digits as one space: to compare a line with a title."""
    return _NON_WORD.sub(" ", text.lower()).strip()


def content_words(text: str) -> set[str]:
    return set(_STEMMER.stemWords([w for w in _WORD.findall(text.lower()) if w not in _STOP]))


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text``; a line break always ends one. The one splitter of answers and passages."""
    return [s.strip() for line in text.splitlines() for s in _SENTENCE.split(line) if s.strip()]


@dataclass
class SentenceSupport:
    sentence: str
    support: float          # share of its content words found in the cited passages; 1.0 when nothing to check
    supported: bool


def check_support(answer: str, cited_texts: list[str], threshold: float) -> list[SentenceSupport]:
    """One verdict per answer sentence against the union of the cited passages."""
    vocabulary: set[str] = set()
    for text in cited_texts:
        vocabulary |= content_words(text)
    verdicts = []
    for sentence in split_sentences(_CITATION.sub("", answer)):
        words = content_words(sentence)
        if len(words) < MIN_FACT_WORDS:
            verdicts.append(SentenceSupport(sentence, 1.0, True))
            continue
        share = len(words & vocabulary) / len(words)
        verdicts.append(SentenceSupport(sentence, round(share, 3), share >= threshold))
    return verdicts


def extract_answer(question: str, passage_text: str, max_sentences: int = 2, max_chars: int = 400) -> str:
    """The passage's sentences that share the most content words with the question, in passage order."""
    sentences = split_sentences(passage_text)
    if not sentences:
        return passage_text.strip()[:max_chars]
    asked = content_words(question)
    scored = sorted(range(len(sentences)),
                    key=lambda i: (-len(asked & content_words(sentences[i])), i))[:max_sentences]
    picked = " ".join(sentences[i] for i in sorted(scored))
    return picked if len(picked) <= max_chars else picked[:max_chars].rsplit(" ", 1)[0] + " ..."
