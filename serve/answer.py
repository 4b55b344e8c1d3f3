"""Grounded answering: relevance gate -> prompt with numbered passages -> answer with resolved citations."""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field

from retrieval.collection import SearchHit
from serve.generator import ABSTENTION, Passage, build_messages, cited_numbers, says_abstain

_WORD = re.compile(r"[a-z0-9]+")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
_STOP = frozenset("a an the and or of to in on for with is are be it this that you your can do how what i".split())


@dataclass
class Citation:
    n: int
    chunk_id: str
    doc_id: str
    source: str
    title: str
    score: float


@dataclass
class Answer:
    question: str
    answer: str
    abstained: bool
    citations: list[Citation] = field(default_factory=list)
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _content_words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def best_overlap(answer: str, passages: list[Passage]) -> int | None:
    """1-based number of the passage sharing the most content words with the answer, if any."""
    words = _content_words(answer)
    overlaps = [len(words & _content_words(p.title + " " + p.text)) for p in passages]
    if not overlaps or max(overlaps) == 0:
        return None
    return overlaps.index(max(overlaps)) + 1


def trim_to_sentence(text: str) -> str:
    """Generation stops at a token budget; drop a trailing half sentence when a whole one exists."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[:ends[-1]].strip() if ends and ends[-1] < len(text.rstrip()) else text.strip()


class Answerer:
    def __init__(self, generator, min_relevance: float, prompt_passages: int = 3):
        if not -1.0 <= min_relevance <= 1.0:
            raise ValueError(f"min_relevance is a cosine similarity in [-1, 1], got {min_relevance}")
        if prompt_passages < 1:
            raise ValueError(f"prompt_passages must be >= 1, got {prompt_passages}")
        self.generator = generator
        self.min_relevance = min_relevance
        self.prompt_passages = prompt_passages

    def answer(self, question: str, hits: list[SearchHit], timings_ms: dict | None = None) -> Answer:
        timings = dict(timings_ms or {})
        relevant = [h for h in hits if (h.dense_score if h.dense_score is not None else -1.0) >= self.min_relevance]
        if not relevant:
            return Answer(question, ABSTENTION, True, [], timings)
        # Keep retrieval order (fused rank), but only passages that passed the gate.
        used = relevant[: self.prompt_passages]
        passages = [Passage(" > ".join(p for p in (h.chunk.title, h.chunk.heading) if p), h.chunk.text) for h in used]
        start = time.perf_counter()
        raw, prompt_tokens, new_tokens = self.generator.generate(build_messages(question, passages))
        timings["generate"] = round((time.perf_counter() - start) * 1000, 1)
        timings["prompt_tokens"], timings["new_tokens"] = prompt_tokens, new_tokens
        if says_abstain(raw) or not raw.strip():
            return Answer(question, ABSTENTION, True, [], timings)
        text, numbers = cited_numbers(trim_to_sentence(raw), len(passages))
        if not numbers:
            # The small base generator often forgets to cite: point at the passage it drew most words from.
            best = best_overlap(text, passages)
            if best is not None:
                numbers = [best]
                text = f"{text} [{best}]"
        citations = [Citation(n=n, chunk_id=used[n - 1].chunk.chunk_id, doc_id=used[n - 1].chunk.doc_id,
                              source=used[n - 1].chunk.source, title=used[n - 1].chunk.title,
                              score=round(used[n - 1].score, 6)) for n in numbers]
        return Answer(question, text, False, citations, timings)
