"""The metrics, one module for training and the benchmarks.

- retrieval: hit@k, nDCG@10 and MRR@10 of a ranked list of document ids (benchmarks), and of the gold passage among
  passage vectors (distillation's promotion decision);
- answers: SQuAD-style token-F1, ROUGE-L, and the extractive oracle (the ceiling of choosing sentences);
- scorers: AUC; comparisons: a paired bootstrap interval over the same questions.
"""
from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np

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


def ranking_metrics(ranking: list[str], gold: set[str]) -> dict[str, float]:
    """hit@1, hit@5, nDCG@10 and MRR@10 of one ranked list of ids against the gold ids."""
    first = next((i for i, d in enumerate(ranking) if d in gold), None)
    dcg = sum(1 / math.log2(i + 2) for i, d in enumerate(ranking[:10]) if d in gold)
    idcg = sum(1 / math.log2(i + 2) for i in range(min(len(gold), 10)))
    return {"hit@1": float(first == 0), "hit@5": float(first is not None and first < 5),
            "nDCG@10": dcg / idcg if idcg else 0.0,
            "MRR@10": 1 / (first + 1) if first is not None and first < 10 else 0.0}


# Not sentence-transformers' InformationRetrievalEvaluator: promotion scores the serving encoder from the vectors
# already stored in the collection, and the evaluator would re-encode the whole corpus with it.
def chunk_retrieval_metrics(query_vectors: np.ndarray, passage_vectors: np.ndarray, gold: list[int]) -> dict[str, float]:
    """MRR@10 and hit@1/hit@10 of the gold passage index per query (vectors L2-normalised)."""
    if not gold:
        return {"mrr@10": 0.0, "hit@1": 0.0, "hit@10": 0.0, "queries": 0}
    scores = query_vectors @ passage_vectors.T                   # (Q, N)
    gold_scores = scores[np.arange(len(gold)), gold][:, None]
    ranks = (scores > gold_scores).sum(1)                        # 0 = on top
    return {"mrr@10": float(np.mean(np.where(ranks < 10, 1.0 / (ranks + 1), 0.0))),
            "hit@1": float(np.mean(ranks == 0)), "hit@10": float(np.mean(ranks < 10)), "queries": len(gold)}


def auc(scores: list[float], labels: list[int]) -> float:
    """Probability that a random positive outscores a random negative (ties count half); nan with one class."""
    from sklearn.metrics import roc_auc_score

    if len(set(bool(y) for y in labels)) < 2:
        return float("nan")   # roc_auc_score raises instead
    return float(roc_auc_score([bool(y) for y in labels], scores))


def paired_interval(a: list[float], b: list[float], rounds: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over the same questions, with a 95% bootstrap interval (questions resampled)."""
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (rounds, len(diff)))].mean(axis=1)
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))
