"""The three gates a question passes before an answer is written; each refuses by returning its verdict, never by
raising.

- ``RelevanceGate``: which retrieved passages are close enough to the question to be shown (a cosine floor), and how
  many (the prompt's passages). None left: abstain.
- ``AnswerabilityGate`` (opt-in, `kbqa train-answerability --activate`): a cross-encoder's p(a passage holds the
  answer), read before anything is selected or generated.
- ``GapGate``: the knowledge-gap detector (gap_detector.py) over the selection's signals: do these passages hold the
  answer at all?
"""
from __future__ import annotations

from dataclasses import dataclass

from retrieval.answering.gap_detector import gap_signals
from retrieval.answering.records import Passage
from retrieval.answering.selection import Selection
from retrieval.search import SearchHit


@dataclass(frozen=True)
class GateVerdict:
    answerability: float   # p(the passages hold the answer), rounded as served
    passed: bool


def dense_of(hit: SearchHit, missing: float) -> float:
    """The hit's cosine to the question; ``missing`` when it came from BM25 alone."""
    return hit.dense_score if hit.dense_score is not None else missing


def signals_of(question: str, used: list[SearchHit], selection: Selection):
    """The gap detector's signals (gap_detector.py) for ``selection`` over the prompt's hits ``used``."""
    return gap_signals(question, [(h.chunk.context, h.chunk.text, dense_of(h, 0.0)) for h in used], selection)


class RelevanceGate:
    def __init__(self, min_relevance: float, prompt_passages: int = 3):
        if not -1.0 <= min_relevance <= 1.0:
            raise ValueError(f"min_relevance is a cosine similarity in [-1, 1], got {min_relevance}")
        if prompt_passages < 1:
            raise ValueError(f"prompt_passages must be >= 1, got {prompt_passages}")
        self.min_relevance, self.prompt_passages = min_relevance, prompt_passages

    def run(self, hits: list[SearchHit], min_relevance: float | None = None) -> list[SearchHit]:
        """Passages for the prompt: retrieval order (fused rank), only those that pass the gate (``min_relevance``:
        another encoder's floor, its cosines being on another scale)."""
        floor = self.min_relevance if min_relevance is None else min_relevance
        return [h for h in hits if dense_of(h, -1.0) >= floor][: self.prompt_passages]


class AnswerabilityGate:
    def __init__(self, scorer, threshold: float):
        """``scorer``: retrieval/answering/answerability.py:AnswerabilityScorer (loaded)."""
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"answerability_threshold is a probability in [0, 1], got {threshold}")
        self.scorer, self.threshold = scorer, threshold

    def run(self, question: str, passages: list[Passage]) -> GateVerdict:
        score = round(max(self.scorer.scores(question, passages)), 4)
        return GateVerdict(score, score >= self.threshold)


class GapGate:
    def __init__(self, detector):
        """``detector``: retrieval/answering/gap_detector.py:GapDetector."""
        if detector is None:
            raise ValueError("the gap gate needs a gap detector")
        self.detector = detector

    def run(self, question: str, used: list[SearchHit], selection: Selection) -> GateVerdict:
        gap = self.detector.probability(signals_of(question, used, selection))
        return GateVerdict(round(1.0 - gap, 4), gap < self.detector.threshold)
