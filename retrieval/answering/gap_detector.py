"""Do the prompt passages hold the answer at all? The knowledge-gap detector, asked after the sentences are scored.

A cosine gate passes any question about the same product (on the dev sets: 3 of 27 gap questions refused). The signals
that separate better come from reading the question with each sentence: the sentence scorer's best probability,
how many sentences it finds, the selector's best, and the retrieval margin. A logistic model over them is fitted
on the tune halves of the dev sets under the knowledge-gap protocol (benchs/common.py) by
``distill/selector_train.py``; its threshold keeps false abstentions on answerable tune questions at or below
10%. It ships in ``gap_detector.json`` beside this module.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from retrieval.answering.fitted import logit, read_fitted
from retrieval.answering.grounding import content_words

SHIPPED_GAP_DETECTOR = Path(__file__).resolve().parent / "gap_detector.json"
SIGNALS = ("bias", "best_score_logit", "top3_score_mean", "scores_over_half", "best_selected", "top_dense",
           "dense_margin", "question_coverage")


def gap_signals(question: str, passages: list[tuple[str, str, float]], selection) -> np.ndarray:
    """(S,) signals of one answer attempt: ``passages`` (context, text, dense) in prompt order; ``selection`` the
    SentenceSelector's result on them."""
    scores = sorted(selection.scores, reverse=True) or [0.0]
    dense = sorted((p[2] for p in passages), reverse=True) or [0.0]
    asked = content_words(question) or {""}
    seen: set[str] = set()
    for context, text, _ in passages:
        seen |= content_words(context + " " + text)
    return np.asarray([1.0, logit(scores[0]), float(np.mean(scores[:3])), math.log1p(sum(s > 0.5 for s in scores)),
                       max(selection.probabilities, default=0.0), dense[0],
                       dense[0] - (dense[1] if len(dense) > 1 else 0.0), len(asked & seen) / len(asked)],
                      dtype=np.float32)


class GapDetector:
    """p(the passages do not hold the answer) from ``gap_signals``; refuses at or above ``threshold``."""

    def __init__(self, weights: list[float], threshold: float, report: dict | None = None):
        if len(weights) != len(SIGNALS):
            raise ValueError(f"gap detector weights must have {len(SIGNALS)} values ({', '.join(SIGNALS)}), "
                             f"got {len(weights)}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"gap detector threshold is a probability in [0, 1], got {threshold}")
        self.weights, self.threshold, self.report = np.asarray(weights, dtype=np.float32), threshold, report or {}

    @classmethod
    def load(cls, path: Path = SHIPPED_GAP_DETECTOR) -> "GapDetector":
        return read_fitted(path, "signals", SIGNALS, "gap detector",
                           lambda spec: cls(spec["weights"], spec["threshold"], spec.get("report")))

    def to_dict(self) -> dict:
        return {"signals": list(SIGNALS), "weights": [round(float(w), 5) for w in self.weights],
                "threshold": self.threshold, "report": self.report}

    def probability(self, signals: np.ndarray) -> float:
        return float(1.0 / (1.0 + np.exp(-(signals @ self.weights))))

    def refuses(self, signals: np.ndarray) -> bool:
        return self.probability(signals) >= self.threshold
