"""Choosing the answer's sentences from the prompt passages: the part of answering a small model does worst.

A passage is cut into *units* (sentences, and list items kept as one unit each). Each unit gets a probability of
belonging to the answer from a logistic model over the sentence scorer's probability (a MiniLM cross-encoder
that reads question and unit together, trained here: retrieval/answering/answerability.py) and cheap features
(question overlap, the passage's rank and relevance, position, being a list step; see ``FEATURES``). Both are
fitted on the dev sets' tune halves against the extractive oracle (``distill/selector_train.py``); the weights,
threshold and word budget ship in ``selector.json`` beside this module, with the figures they were chosen on.

The answer is the chosen units in passage order, each passage's run followed by its citation ``[n]``: every
sentence cites the passage it was taken from. A numbered or bulleted procedure one of whose steps is chosen comes
back whole (up to ``max_list_items``), since a support answer with step 3 of 7 is worse than none.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrieval.answering.fitted import logit, read_fitted
from retrieval.answering.records import Passage
from retrieval.answering.grounding import content_words, split_sentences

SHIPPED_SELECTOR = Path(__file__).resolve().parent / "selector.json"
_LIST_ITEM = re.compile(r"^\s*(?:[-*•▪◦]|\d{1,2}[.)]|\(?[a-z]\)|step \d+[:.])\s+", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?:;][\"')\]]*$")
_PAGE_NUMBER = re.compile(r"^-\s*\d+\s*-$")   # "- 7 -" footers of PDF manuals
FEATURES = ("bias", "score_logit", "gap_to_passage_best", "gap_to_best", "passage_best", "q_recall", "u_precision",
            "passage_rank_1", "passage_rank_2", "passage_dense", "dense_gap_to_top", "first_unit", "log_position",
            "log_words", "list_item", "after_passage_best", "before_passage_best", "context_recall")


@dataclass
class Unit:
    text: str
    passage: int          # 0-based index of the prompt passage it comes from
    index: int            # order inside the passage
    block: int | None     # id of the list it belongs to, None for prose


def _lines(text: str) -> list[tuple[str, bool]]:
    """Logical lines, (text, is_list_item): hard-wrapped prose lines (PDF manuals) joined back together."""
    merged: list[tuple[str, bool]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or _PAGE_NUMBER.match(line):
            if merged and not merged[-1][1]:
                merged.append(("", False))   # a paragraph break ends the run of joined lines
            continue
        item = bool(_LIST_ITEM.match(line))
        if merged and merged[-1][0] and not item and not merged[-1][1] and not _SENTENCE_END.search(merged[-1][0]):
            merged[-1] = (merged[-1][0] + " " + line, False)
        else:
            merged.append((line, item))
    return [(t, item) for t, item in merged if t]


def split_units(text: str, passage: int = 0) -> list[Unit]:
    """Sentences of prose and whole list items, in order; consecutive items share a block id."""
    units: list[Unit] = []
    block, previous_item = 0, False
    for line, item in _lines(text):
        if item:
            if not previous_item:
                block += 1
            units.append(Unit(line, passage, len(units), block))
        else:
            for sentence in split_sentences(line):
                units.append(Unit(sentence, passage, len(units), None))
        previous_item = item
    return units


@dataclass
class Selection:
    units: list[Unit]                     # the chosen ones
    probabilities: list[float]            # the selector's, per unit of every passage, aligned with ``candidates``
    candidates: list[Unit] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)   # the sentence scorer's, aligned with ``candidates``

    @property
    def best(self) -> float:
        return max(self.probabilities, default=0.0)

    def text(self) -> tuple[str, list[int]]:
        """The answer: chosen units grouped by passage (retrieval order), each group cited. Returns (text, [n])."""
        parts, cited = [], []
        for passage in sorted({u.passage for u in self.units}):
            chosen = sorted((u for u in self.units if u.passage == passage), key=lambda u: u.index)
            lines, prose = [], []
            for unit in chosen:
                if unit.block is None:
                    prose.append(unit.text)
                else:
                    if prose:
                        lines.append(" ".join(prose))
                        prose = []
                    lines.append(unit.text)
            if prose:
                lines.append(" ".join(prose))
            parts.append("\n".join(lines) + f" [{passage + 1}]")
            cited.append(passage + 1)
        return "\n\n".join(parts), cited


def unit_features(question: str, passages: list[tuple[str, str, float]], units: list[Unit],
                  scores: np.ndarray) -> np.ndarray:
    """(U, F) features; ``passages`` are (context, text, dense score) in prompt order; ``scores`` (U,) the sentence
    scorer's probabilities."""
    asked = content_words(question) or {""}
    best_in_passage: dict[int, int] = {}
    for i, unit in enumerate(units):
        current = best_in_passage.get(unit.passage)
        if current is None or scores[i] > scores[current]:
            best_in_passage[unit.passage] = i
    top_dense = max((p[2] for p in passages), default=0.0)
    best = float(scores.max())
    context_recall = [len(asked & content_words(context)) / len(asked) for context, _, _ in passages]
    rows = []
    for i, unit in enumerate(units):
        words = content_words(unit.text)
        shared = len(asked & words)
        dense = passages[unit.passage][2]
        anchor = best_in_passage[unit.passage]
        passage_best = float(scores[anchor])
        rows.append([1.0, logit(float(scores[i])), float(scores[i]) - passage_best, float(scores[i]) - best, passage_best,
                     shared / len(asked), shared / max(len(words), 1), float(unit.passage == 1),
                     float(unit.passage >= 2), dense, dense - top_dense, float(unit.index == 0),
                     math.log1p(unit.index), math.log1p(len(unit.text.split())), float(unit.block is not None),
                     float(unit.index > units[anchor].index), float(unit.index < units[anchor].index),
                     context_recall[unit.passage]])
    return np.asarray(rows, dtype=np.float32)


def scored_units(question: str, passages: list[tuple[str, str, float]], scorer
                 ) -> tuple[list[Unit], np.ndarray, np.ndarray]:
    """The passages' units, the scorer's p(answer) for each (U,), and their selector features (U, F): what both
    serving (SentenceSelector.select) and fitting (distill/selector_train.py) start from."""
    units = [u for n, (_, text, _) in enumerate(passages) for u in split_units(text, n)]
    scores = unit_scores(question, passages, units, scorer)
    return units, scores, unit_features(question, passages, units, scores) if units else np.zeros((0, len(FEATURES)))


def unit_scores(question: str, passages: list[tuple[str, str, float]], units: list[Unit], scorer) -> np.ndarray:
    """The sentence scorer's p(unit belongs to the answer), read with its passage's context."""
    if not units:
        return np.zeros(0, dtype=np.float32)
    return np.asarray(scorer.scores(question, [Passage(passages[u.passage][0], u.text) for u in units]),
                      dtype=np.float32)


class SentenceSelector:
    """Chooses answer units; ``weights`` follow ``FEATURES``. Cheap to build; ``load`` reads a fitted one."""

    def __init__(self, weights: list[float], threshold: float = 0.5, budget_words: int = 120,
                 min_units: int = 1, max_list_items: int = 12, report: dict | None = None):
        if len(weights) != len(FEATURES):
            raise ValueError(f"selector weights must have {len(FEATURES)} values ({', '.join(FEATURES)}), "
                             f"got {len(weights)}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"selector threshold is a probability in [0, 1], got {threshold}")
        if budget_words < 1:
            raise ValueError(f"budget_words must be >= 1, got {budget_words}")
        self.weights = np.asarray(weights, dtype=np.float32)
        self.threshold, self.budget_words = threshold, budget_words
        self.min_units, self.max_list_items = min_units, max_list_items
        self.report = report or {}

    @classmethod
    def load(cls, path: Path = SHIPPED_SELECTOR) -> "SentenceSelector":
        return read_fitted(path, "features", FEATURES, "selector", lambda spec: cls(
            spec["weights"], spec["threshold"], spec["budget_words"], spec.get("min_units", 1),
            spec.get("max_list_items", 12), spec.get("report")))

    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "weights": [round(float(w), 5) for w in self.weights],
                "threshold": self.threshold, "budget_words": self.budget_words, "min_units": self.min_units,
                "max_list_items": self.max_list_items, "report": self.report}

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(features @ self.weights)))

    def select(self, question: str, passages: list[tuple[str, str, float]], scorer) -> Selection:
        """``passages``: (context, text, dense score) in prompt order; ``scorer.scores(question, passages)`` gives
        p(answer) per unit (retrieval/answering/answerability.py:AnswerabilityScorer)."""
        units, scores, features = scored_units(question, passages, scorer)
        if not units:
            return Selection([], [], [])
        probs = self.probabilities(features)
        return Selection(self.choose(units, probs), [float(p) for p in probs], units, [float(x) for x in scores])

    def choose(self, units: list[Unit], probs: np.ndarray) -> list[Unit]:
        """Most probable first while above the threshold (at least ``min_units``) and within the word budget;
        then a chosen list step brings its whole list."""
        chosen: list[Unit] = []
        words = 0
        for i in np.argsort(-probs, kind="stable"):
            unit = units[i]
            if len(chosen) >= self.min_units and (probs[i] < self.threshold or words >= self.budget_words):
                break
            chosen.append(unit)
            words += len(unit.text.split())
        blocks = {(u.passage, u.block) for u in chosen if u.block is not None}
        for passage, block in blocks:
            items = [u for u in units if u.passage == passage and u.block == block]
            if len(items) <= self.max_list_items:
                chosen += [u for u in items if u not in chosen]
        return chosen


class SentenceSelection:
    """The selection stage: the prompt passages' answer units, chosen by ``selector`` over ``scorer``'s
    probabilities (the shipped MiniLM cross-encoder)."""

    def __init__(self, selector: SentenceSelector, scorer):
        if selector is None or scorer is None:
            raise ValueError("sentence selection needs a selector and a sentence scorer (`kbqa prepare`)")
        self.selector, self.scorer = selector, scorer

    def run(self, question: str, used) -> Selection:
        """``used``: the prompt's SearchHits, in order."""
        triples = [(h.chunk.context, h.chunk.text, h.dense_score if h.dense_score is not None else 0.0) for h in used]
        return self.selector.select(question, triples, self.scorer)
