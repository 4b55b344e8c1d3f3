"""Choosing the answer's sentences from the prompt passages: the part of answering a small model does worst.

A passage is cut into *units* (sentences, and list items kept as one unit each). Each unit gets a probability of
belonging to the answer from a logistic model over the sentence scorer's probability (a MiniLM cross-encoder
that reads question and unit together, trained here: retrieval/answering/answerability.py) and cheap features
(question overlap, the passage's rank and relevance, position, being a list step; see ``FEATURES``). Both are
fitted against the extractive oracle on the dev sets' tune halves, the selector on scores from scorers that never saw
the example's domain (``distill/selector_train.py --crossed``); its weights, shape, threshold, word budget and lead
ship in ``selector.json`` beside this module, with the figures they were chosen on.

Two answer shapes, the better on the fitting data chosen by the fit (``shape``):
- ``section``: one passage's contiguous run: from ``lead_units`` units before the most probable unit, on until
  ``budget_words``. A customer gets the docs' own paragraph, in order, from the passage that answers; scattered
  sentences lose the connective text references keep (leave-one-dataset-out on the tune split, issue 27: 0.480
  token-F1 against 0.412 for scattered units and 0.420 for the first 110 words of the prompt passages).
- ``units``: the most probable units above ``threshold`` within ``budget_words``, from any passage.
The answer is the chosen units in passage order, each passage's run followed by its citation ``[n]``: every
sentence cites the passage it was taken from. A procedure one of whose steps is chosen comes back whole (up to
``max_list_items``), since a support answer with step 3 of 7 is worse than none: a numbered or bulleted list, and the
steps an intro ending in a colon announces ("To upgrade your plan: Go to ... Under Monthly Balance click Upgrade.
Choose a plan ...", the rest of its line or paragraph). A unit that repeats the passage's title or a heading is no
answer and is never chosen.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrieval.answering.fitted import logit, read_fitted
from retrieval.answering.records import Passage
from retrieval.answering.grounding import content_words, normalised, split_sentences

SHIPPED_SELECTOR = Path(__file__).resolve().parent / "selector.json"
_LIST_ITEM = re.compile(r"^\s*(?:[-*•▪◦]|\d{1,2}[.)]|\(?[a-z]\)|step \d+[:.])\s+", re.IGNORECASE)
_SENTENCE_END = re.compile(r"[.!?:;][\"')\]]*$")
_PAGE_NUMBER = re.compile(r"^-\s*\d+\s*-$")   # "- 7 -" footers of PDF manuals
# An intro announcing steps: a colon at the end of the unit or before the first step ("Important:" alone is a callout
# label, "10:30" and "https://" are no intros).
_INTRO = re.compile(r":(?:\s|$)")
_LABEL = re.compile(r"^\W*\w+(?:\s\w+)?\s*:\s*$")
SHAPES = ("units", "section")
FEATURES = ("bias", "score_logit", "gap_to_passage_best", "gap_to_best", "passage_best", "q_recall", "u_precision",
            "passage_rank_1", "passage_rank_2", "passage_dense", "dense_gap_to_top", "first_unit", "log_position",
            "log_words", "list_item", "after_passage_best", "before_passage_best", "context_recall")


@dataclass
class Unit:
    text: str
    passage: int          # 0-based index of the prompt passage it comes from
    index: int            # order inside the passage
    block: int | None     # id of the list it belongs to, None for prose
    procedure: int | None = None   # id of the colon-introduced procedure it belongs to (intro and steps)


def _lines(text: str, breaks: bool = False, headings: frozenset = frozenset()) -> list[tuple[str, bool]]:
    """Logical lines, (text, is_list_item): hard-wrapped prose lines (PDF manuals) joined back together;
    ``breaks``: paragraph breaks kept as ("", False); a line in ``headings`` (normalised) is a break, not text:
    joined to the next line it would open the answer with the article's title."""
    merged: list[tuple[str, bool]] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or _PAGE_NUMBER.match(line) or normalised(line) in headings:
            if merged and merged[-1][0]:
                merged.append(("", False))   # a paragraph break ends the run of joined lines (and a procedure)
            continue
        item = bool(_LIST_ITEM.match(line))
        if merged and merged[-1][0] and not item and not merged[-1][1] and not _SENTENCE_END.search(merged[-1][0]):
            merged[-1] = (merged[-1][0] + " " + line, False)
        else:
            merged.append((line, item))
    return [(t, item) for t, item in merged if t or breaks]


def _is_intro(sentence: str) -> bool:
    return bool(_INTRO.search(sentence)) and not _LABEL.match(sentence)


def split_units(text: str, passage: int = 0, context: str = "") -> list[Unit]:
    """Sentences of prose and whole list items, in order; consecutive items share a block id, and an intro with
    its steps a procedure id: a prose sentence with a colon opens one that runs to the end of its line, or, when
    the line ends with the colon, to the end of the paragraph. Lines repeating a part of ``context`` (the title,
    a heading) are left out."""
    units: list[Unit] = []
    block = procedure = 0
    previous_item, open_procedure = False, None   # open_procedure: the id a paragraph-long procedure runs under
    for line, item in _lines(text, breaks=True, headings=_headings(context)):
        if not line:
            open_procedure = None
            continue
        if item:
            if not previous_item:
                block += 1
            units.append(Unit(line, passage, len(units), block, open_procedure))
        else:
            in_line = open_procedure
            sentences = split_sentences(line)
            for n, sentence in enumerate(sentences):
                if in_line is None and _is_intro(sentence) and (n < len(sentences) - 1 or sentence.endswith(":")):
                    procedure += 1
                    in_line = procedure
                units.append(Unit(sentence, passage, len(units), None, in_line))
            open_procedure = in_line if line.endswith(":") and in_line is not None else open_procedure
        previous_item = item
    return units


def _headings(context: str) -> frozenset:
    return frozenset(normalised(part) for part in context.split(" > ") if normalised(part))


def is_heading(unit: Unit, context: str) -> bool:
    """The unit only repeats the passage's title or one of its headings (FAQ chunks open with their question)."""
    return normalised(unit.text) in _headings(context)


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
    units = [u for n, (context, text, _) in enumerate(passages) for u in split_units(text, n, context)
             if not is_heading(u, context)]
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
                 min_units: int = 1, max_list_items: int = 12, report: dict | None = None,
                 shape: str = "units", lead_units: int = 0):
        if len(weights) != len(FEATURES):
            raise ValueError(f"selector weights must have {len(FEATURES)} values ({', '.join(FEATURES)}), "
                             f"got {len(weights)}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"selector threshold is a probability in [0, 1], got {threshold}")
        if budget_words < 1:
            raise ValueError(f"budget_words must be >= 1, got {budget_words}")
        if shape not in SHAPES:
            raise ValueError(f"selector shape must be one of {', '.join(SHAPES)}, got {shape!r}")
        if lead_units < 0:
            raise ValueError(f"lead_units must be >= 0, got {lead_units}")
        self.shape, self.lead_units = shape, lead_units
        self.weights = np.asarray(weights, dtype=np.float32)
        self.threshold, self.budget_words = threshold, budget_words
        self.min_units, self.max_list_items = min_units, max_list_items
        self.report = report or {}

    @classmethod
    def load(cls, path: Path = SHIPPED_SELECTOR) -> "SentenceSelector":
        return read_fitted(path, "features", FEATURES, "selector", lambda spec: cls(
            spec["weights"], spec["threshold"], spec["budget_words"], spec.get("min_units", 1),
            spec.get("max_list_items", 12), spec.get("report"), spec.get("shape", "units"), spec.get("lead_units", 0)))

    def to_dict(self) -> dict:
        return {"features": list(FEATURES), "weights": [round(float(w), 5) for w in self.weights],
                "threshold": self.threshold, "budget_words": self.budget_words, "min_units": self.min_units,
                "max_list_items": self.max_list_items, "shape": self.shape, "lead_units": self.lead_units,
                "report": self.report}

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
        """The units of ``shape`` (see the module's doc); then a chosen list step brings its whole list, and a
        chosen step or intro of a procedure the whole procedure."""
        chosen = self._section(units, probs) if self.shape == "section" else self._units(units, probs)
        for key in ("block", "procedure"):
            for passage, group in {(u.passage, getattr(u, key)) for u in chosen if getattr(u, key) is not None}:
                items = [u for u in units if u.passage == passage and getattr(u, key) == group]
                if len(items) <= self.max_list_items:
                    chosen += [u for u in items if u not in chosen]
        return chosen

    def _units(self, units: list[Unit], probs: np.ndarray) -> list[Unit]:
        """Most probable first while above the threshold (at least ``min_units``) and within the word budget."""
        chosen: list[Unit] = []
        words = 0
        for i in np.argsort(-probs, kind="stable"):
            if len(chosen) >= self.min_units and (probs[i] < self.threshold or words >= self.budget_words):
                break
            chosen.append(units[i])
            words += len(units[i].text.split())
        return chosen

    def _section(self, units: list[Unit], probs: np.ndarray) -> list[Unit]:
        """The best unit's passage from ``lead_units`` before it until the budget, the best unit always in."""
        best = units[int(np.argmax(probs))]
        passage = sorted((u for u in units if u.passage == best.passage), key=lambda u: u.index)
        start = max(0, passage.index(best) - self.lead_units)
        chosen: list[Unit] = []
        words = 0
        for unit in passage[start:]:
            if words >= self.budget_words and unit.index > best.index:
                break
            chosen.append(unit)
            words += len(unit.text.split())
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
