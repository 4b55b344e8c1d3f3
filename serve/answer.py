"""Grounded answering: relevance gate -> prompt with numbered passages -> answer with resolved citations."""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field

from retrieval.collection import SearchHit
from retrieval.generation.generator import ABSTENTION, Passage, build_messages, cited_numbers, says_abstain
from retrieval.generation.grounding import check_support, extract_answer

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
    # generated: the generator's answer passed the support check; extractive: it did not, and sentences
    # quoted from the best passage replace it; abstained: no passage was relevant, the answerability
    # scorer found none holding the answer, or the generator (or the support check, under
    # on_unsupported="abstain") declined.
    grounding: str = "abstained"
    citations: list[Citation] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)   # generated sentences the check rejected
    answer_id: str = ""   # set when the service records the answer (POST /v1/feedback refers to it)
    rewritten_question: str | None = None   # the standalone form of a follow-up, when history changed it
    timings_ms: dict[str, float] = field(default_factory=dict)
    # The answerability scorer's p(the best prompt passage holds the answer); None when no scorer ran.
    answerability: float | None = None

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


ON_UNSUPPORTED = ("extractive", "abstain")


class Answerer:
    def __init__(self, generator, min_relevance: float, prompt_passages: int = 3,
                 support_threshold: float = 0.6, on_unsupported: str = "extractive",
                 answerability=None, answerability_threshold: float = 0.0):
        if not -1.0 <= min_relevance <= 1.0:
            raise ValueError(f"min_relevance is a cosine similarity in [-1, 1], got {min_relevance}")
        if prompt_passages < 1:
            raise ValueError(f"prompt_passages must be >= 1, got {prompt_passages}")
        if not 0.0 <= support_threshold <= 1.0:
            raise ValueError(f"support_threshold is a share in [0, 1], got {support_threshold}")
        if on_unsupported not in ON_UNSUPPORTED:
            raise ValueError(f"on_unsupported must be one of {ON_UNSUPPORTED}, got {on_unsupported!r}")
        if not 0.0 <= answerability_threshold <= 1.0:
            raise ValueError(f"answerability_threshold is a probability in [0, 1], got {answerability_threshold}")
        self.generator = generator
        self.min_relevance = min_relevance
        self.prompt_passages = prompt_passages
        self.support_threshold = support_threshold
        self.on_unsupported = on_unsupported
        self.answerability = answerability   # retrieval/generation/answerability.py:AnswerabilityScorer, or None
        self.answerability_threshold = answerability_threshold

    def select(self, hits: list[SearchHit]) -> list[SearchHit]:
        """Passages for the prompt: retrieval order (fused rank), only those that pass the relevance gate."""
        relevant = [h for h in hits if (h.dense_score if h.dense_score is not None else -1.0) >= self.min_relevance]
        return relevant[: self.prompt_passages]

    @staticmethod
    def passages(used: list[SearchHit]) -> list[Passage]:
        return [Passage(h.chunk.context, h.chunk.text) for h in used]

    def answer(self, question: str, hits: list[SearchHit], timings_ms: dict | None = None) -> Answer:
        final = None
        for kind, value in self.stream(question, hits, timings_ms):
            if kind == "final":
                final = value
        return final

    def stream(self, question: str, hits: list[SearchHit], timings_ms: dict | None = None):
        """Yields ("token", text) pieces as the generator writes them, then ("final", Answer).

        Tokens are the generator's raw words; the final Answer is what to show (it may differ: citations
        resolved, an unsupported answer replaced)."""
        timings = dict(timings_ms or {})
        used = self.select(hits)
        if not used:
            yield "final", Answer(question, ABSTENTION, True, "abstained", [], [], timings_ms=timings)
            return
        passages = self.passages(used)
        answerability = None
        if self.answerability is not None:
            start = time.perf_counter()
            answerability = round(max(self.answerability.scores(question, passages)), 4)
            timings["answerability"] = round((time.perf_counter() - start) * 1000, 1)
            if answerability < self.answerability_threshold:
                # No passage holds the answer: abstain without spending a generation on it.
                yield "final", Answer(question, ABSTENTION, True, "abstained", [], [], timings_ms=timings,
                                      answerability=answerability)
                return
        start = time.perf_counter()
        pieces: list[str] = []
        stats: dict = {}
        for piece in self.generator.stream(build_messages(question, passages), stats):
            pieces.append(piece)
            yield "token", piece
        timings["generate"] = round((time.perf_counter() - start) * 1000, 1)
        timings["prompt_tokens"], timings["new_tokens"] = stats.get("prompt_tokens", 0), stats.get("new_tokens", 0)
        final = self.finish(question, "".join(pieces).strip(), used, timings)
        final.answerability = answerability
        yield "final", final

    def finish(self, question: str, raw: str, used: list[SearchHit], timings: dict) -> Answer:
        """Generated text -> the answer to show: citations resolved, support checked, replaced if unsupported."""
        passages = self.passages(used)
        if says_abstain(raw) or not raw.strip():
            return Answer(question, ABSTENTION, True, "abstained", [], [], timings_ms=timings)
        text, numbers = cited_numbers(trim_to_sentence(raw), len(passages))
        if not numbers:
            # The small base generator often forgets to cite: point at the passage it drew most words from.
            best = best_overlap(text, passages)
            if best is not None:
                numbers = [best]
                text = f"{text} [{best}]"
        verdicts = check_support(text, [passages[n - 1].title + " " + passages[n - 1].text for n in numbers],
                                 self.support_threshold)
        unsupported = [v.sentence for v in verdicts if not v.supported]
        grounding = "generated"
        if unsupported or not numbers:
            if self.on_unsupported == "abstain":
                return Answer(question, ABSTENTION, True, "abstained", [], unsupported, timings_ms=timings)
            # Quote the passage retrieval ranked first: it is the one the gate trusts most.
            text, numbers, grounding = f"{extract_answer(question, passages[0].text)} [1]", [1], "extractive"
        citations = [Citation(n=n, chunk_id=used[n - 1].chunk.chunk_id, doc_id=used[n - 1].chunk.doc_id,
                              source=used[n - 1].chunk.source, title=used[n - 1].chunk.title,
                              score=round(used[n - 1].score, 6)) for n in numbers]
        return Answer(question, text, False, grounding, citations, unsupported, timings_ms=timings)
