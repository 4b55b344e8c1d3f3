"""Fit a collection's hybrid fusion weight (retrieval/fusion.py) on questions the serving encoder never trained on.

The teacher LLM's held-out questions stand in for the customers' (they come with their source chunk as the answer):
each weight of ``GRID`` ranks them by weighted reciprocal rank fusion of the collection's own dense and BM25 rankings,
and the weight with the best MRR@10 (smoothed over its grid neighbours, so one lucky question does not pick it) is
kept. Below ``MIN_QUESTIONS`` the figure is noise and the weight stays where it was.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from retrieval.collection import Collection
from retrieval.encoder import encode_queries
from retrieval.fusion import RRF_K, hybrid_weights, reciprocal_rank_fusion

GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
MIN_QUESTIONS = 30
DEPTH = 40   # what hybrid search fuses for k <= 10 (retrieval/search.py)


@dataclass
class FusionFit:
    dense_weight: float
    fitted: bool
    questions: int
    reason: str
    mrr_by_weight: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def _reciprocal_rank(ranked: list[str], gold: str, depth: int = 10) -> float:
    return next((1.0 / (i + 1) for i, chunk_id in enumerate(ranked[:depth]) if chunk_id == gold), 0.0)


def rankings(collection: Collection, texts: list[str], depth: int = DEPTH) -> tuple[list, list, dict]:
    """Each text's dense and BM25 rankings (FAISS ids), taken once so every weight fuses the same two lists, and
    the chunks they name by FAISS id."""
    snapshot = collection.snapshot()
    _, ids = snapshot.index.search(encode_queries(snapshot.encoder, texts), depth)
    dense = [[int(i) for i in row if i >= 0] for row in ids]
    lexical = [[key for key, _ in snapshot.bm25.search(text, depth)] for text in texts]
    keys = sorted({key for rows in (dense, lexical) for row in rows for key in row})
    return dense, lexical, collection.store.chunks_by_faiss_ids(keys)


def fused(dense_row: list, lexical_row: list, weight: float, k: int) -> list:
    """The top ``k`` FAISS ids of hybrid search at ``weight`` (retrieval/search.py fuses the same way)."""
    return [key for key, _ in reciprocal_rank_fusion([dense_row, lexical_row], RRF_K, hybrid_weights(weight))[:k]]


def weight_table(collection: Collection, questions: list) -> dict[float, float]:
    """MRR@10 of hybrid search at every weight of GRID, for ``questions`` (``.text``, ``.chunk_id``)."""
    dense, lexical, chunks = rankings(collection, [q.text for q in questions])
    table = {}
    for weight in GRID:
        total = 0.0
        for question, dense_row, lexical_row in zip(questions, dense, lexical):
            ranked = [chunks[key].chunk_id for key in fused(dense_row, lexical_row, weight, 10) if key in chunks]
            total += _reciprocal_rank(ranked, question.chunk_id)
        table[weight] = total / len(questions)
    return table


def smoothed(table: dict[float, float]) -> dict[float, float]:
    weights = list(table)
    return {w: sum(table[v] for v in weights[max(0, i - 1):i + 2]) / len(weights[max(0, i - 1):i + 2])
            for i, w in enumerate(weights)}


def choose_weight(table: dict[float, float]) -> float:
    """The best weight of ``table`` after smoothing; ties go to the weight nearest equal fusion, what was measured
    before any fitting."""
    scores = smoothed(table)
    return max(table, key=lambda w: (round(scores[w], 9), -abs(w - 0.5)))


def fit_dense_weight(collection: Collection, questions: list, min_questions: int = MIN_QUESTIONS) -> FusionFit:
    """Choose and store the serving encoder's fusion weight from ``questions``; too few: keep the current one."""
    current = collection.dense_weight
    if len(questions) < min_questions:
        return FusionFit(current, False, len(questions),
                         f"{len(questions)} held-out questions (< {min_questions}): kept dense weight {current:.2f}")
    table = weight_table(collection, questions)
    best = choose_weight(table)
    collection.set_dense_weight(best, questions=len(questions), mrr_at_best=round(table[best], 4),
                                mrr_at_equal=round(table[0.5], 4))
    return FusionFit(best, True, len(questions),
                     f"dense weight {best:.2f} (MRR@10 {table[best]:.3f}, equal weights {table[0.5]:.3f}) on "
                     f"{len(questions)} held-out questions",
                     {f"{w:.1f}": round(v, 4) for w, v in table.items()})
