"""The knowledge-gap detector calibrated on a collection's own synthetic questions, label-free (issue 27).

The shipped gap detector (retrieval/answering/gap_detector.py) was fitted on other domains' questions; on a new
knowledge base its threshold means another false-abstention rate, and its weights another skill. The teacher LLM's
questions (distill/teacher_questions.py) make the knowledge-gap protocol label-free: each question is asked twice,
once of the whole collection (its source chunk can answer: an answerable example) and once with its source
document's chunks taken out of the hits (nothing written for it remains: a gap example). Their gap signals, read by
the served selection, are what a per-collection detector is fitted on:

- ``threshold``: the shipped weights, the lowest threshold that refuses at most ``max_false_abstention`` of the
  synthetic answerable questions;
- ``refit``: weights fitted on the collection's synthetic examples (a logistic model over the same signals), then
  that threshold.

Synthetic questions are easier than a customer's (the teacher read the chunk), so the false-abstention limit here is
stricter than the 10% a team accepts on real questions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from retrieval.answering.gap_detector import SIGNALS, GapDetector
from retrieval.answering.gates import RelevanceGate, signals_of
from retrieval.answering.selection import SentenceSelection

MAX_FALSE_ABSTENTION = 0.05
HOW = ("threshold", "refit")


@dataclass
class SyntheticSignals:
    """Gap signals of synthetic questions: ``answerable`` (n, S) with the whole collection, ``gap`` (m, S) with the
    source document held out. A question the relevance gate refuses has no signals (the detector is not asked):
    counted in ``gated_answerable`` / ``gated_gap``."""
    answerable: np.ndarray
    gap: np.ndarray
    gated_answerable: int = 0
    gated_gap: int = 0


def attempt_signals(question: str, hits: list, relevance: RelevanceGate, selection: SentenceSelection):
    """The gap signals serving reads when answering ``question`` over ``hits``; None when the relevance gate leaves
    no passage (the detector is not asked)."""
    used = relevance.run(hits)
    return signals_of(question, used, selection.run(question, used)) if used else None


def synthetic_signals(questions: list, doc_of: dict[str, str], search: Callable[[str], list],
                      relevance: RelevanceGate, selection: SentenceSelection, depth: int) -> SyntheticSignals:
    """``questions``: SyntheticQuestion (question, chunk_id); ``doc_of``: chunk id -> document id; ``search``: the
    collection's ranked SearchHits for a question, deeper than ``depth`` (the hits serving asks for) so that
    ``depth`` remain once the source document is out."""
    rows: dict[str, list[np.ndarray]] = {"answerable": [], "gap": []}
    gated = {"answerable": 0, "gap": 0}
    for q in questions:
        hits = search(q.question)
        source = doc_of[q.chunk_id]
        for kind, kept in (("answerable", hits[:depth]),
                           ("gap", [h for h in hits if h.chunk.doc_id != source][:depth])):
            signals = attempt_signals(q.question, kept, relevance, selection)
            if signals is None:
                gated[kind] += 1
            else:
                rows[kind].append(signals)
    empty = np.zeros((0, len(SIGNALS)), dtype=np.float32)
    return SyntheticSignals(np.stack(rows["answerable"]) if rows["answerable"] else empty,
                            np.stack(rows["gap"]) if rows["gap"] else empty, gated["answerable"], gated["gap"])


def lowest_threshold(probabilities: np.ndarray, max_false_abstention: float) -> float:
    """The lowest threshold that refuses at most ``max_false_abstention`` of these answerable examples."""
    allowed = int(np.floor(max_false_abstention * len(probabilities)))
    ranked = np.sort(probabilities)[::-1]
    if len(ranked) == 0:
        return 1.0
    # Refusing at >= t: the (allowed+1)-th highest must sit below t; just above it refuses only the top ``allowed``.
    return float(min(1.0, np.nextafter(ranked[allowed], np.inf))) if allowed < len(ranked) else 0.0


def calibrated(base: GapDetector, signals: SyntheticSignals, how: str = "threshold",
               max_false_abstention: float = MAX_FALSE_ABSTENTION, c: float = 1.0) -> GapDetector:
    """A detector for this collection (see the module's doc); its report holds the synthetic figures it was fitted on."""
    if how not in HOW:
        raise ValueError(f"calibration must be one of {HOW}, got {how!r}")
    if len(signals.answerable) < 20 or len(signals.gap) < 20:
        raise ValueError(f"too few synthetic examples to calibrate the gap detector ({len(signals.answerable)} "
                         f"answerable, {len(signals.gap)} gap; 20 of each needed): let the teacher write more")
    weights = base.weights.astype(np.float64)
    if how == "refit":
        from sklearn.linear_model import LogisticRegression

        x = np.concatenate([signals.answerable, signals.gap])
        y = np.r_[np.zeros(len(signals.answerable)), np.ones(len(signals.gap))]
        weights = LogisticRegression(C=c, fit_intercept=False, max_iter=5000).fit(x, y).coef_[0]
    probe = GapDetector(weights.tolist(), 1.0)
    answerable = np.array([probe.probability(s) for s in signals.answerable])
    gap = np.array([probe.probability(s) for s in signals.gap])
    threshold = lowest_threshold(answerable, max_false_abstention)
    report = {"calibration": how, "synthetic_answerable": len(answerable), "synthetic_gap": len(gap),
              "gated_answerable": signals.gated_answerable, "gated_gap": signals.gated_gap,
              "synthetic_false_abstention": round(float((answerable >= threshold).mean()), 4),
              "synthetic_gap_recall": round(float((gap >= threshold).mean()), 4),
              "max_false_abstention": max_false_abstention}
    return GapDetector(weights.tolist(), threshold, report)
