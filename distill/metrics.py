"""Answer metrics shared by training and the benchmarks: SQuAD-style token-F1 and ROUGE-L, and the extractive
oracle (the ceiling of choosing sentences from the passages)."""
from __future__ import annotations

import re
from collections import Counter

_TOKEN = re.compile(r"[a-z0-9]+")
_CITE = re.compile(r"\s*\[\d{1,2}\]")


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens, citation markers removed."""
    return _TOKEN.findall(_CITE.sub("", text).lower())


def _f1(common: int, predicted: int, reference: int) -> float:
    if not predicted or not reference or not common:
        return 0.0
    precision, recall = common / predicted, common / reference
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, reference: str) -> float:
    p, r = tokens(prediction), tokens(reference)
    return _f1(sum((Counter(p) & Counter(r)).values()), len(p), len(r))


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 on lower-cased word tokens (longest common subsequence, as in Lin 2004)."""
    p, r = tokens(prediction), tokens(reference)
    if not p or not r:
        return 0.0
    previous = [0] * (len(r) + 1)
    for a in p:
        current = [0]
        for j, b in enumerate(r):
            current.append(previous[j] + 1 if a == b else max(previous[j + 1], current[j]))
        previous = current
    return _f1(previous[-1], len(p), len(r))


def oracle_selection(units: list[str], reference: str) -> list[int]:
    """Greedy: add the unit that raises token-F1 against the reference most, until none does. A ceiling that
    reads the reference answer: for measuring and for training labels, never an answering method."""
    reference_counts = Counter(tokens(reference))
    unit_counts = [Counter(tokens(u)) for u in units]
    chosen: list[int] = []
    current, best = Counter(), 0.0
    total_ref = sum(reference_counts.values())
    while True:
        gains = []
        for i, counts in enumerate(unit_counts):
            if i in chosen or not counts:
                continue
            merged = current + counts
            gains.append((_f1(sum((merged & reference_counts).values()), sum(merged.values()), total_ref), i))
        if not gains:
            return sorted(chosen)
        score, i = max(gains)
        if score <= best:
            return sorted(chosen)
        chosen.append(i)
        current, best = current + unit_counts[i], score
