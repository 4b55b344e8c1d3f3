"""Fit a collection's hybrid fusion weight (retrieval/fusion.py) on questions the serving encoder never trained on.

The teacher LLM's held-out questions stand in for the customers' (they come with their source chunk as the answer):
each weight of ``GRID`` ranks them by weighted reciprocal rank fusion of the collection's own dense and BM25 rankings,
and the weight with the best MRR@10 (smoothed over its grid neighbours, so one lucky question does not pick it) is
kept. Below ``MIN_QUESTIONS`` the figure is noise and the weight stays where it was.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from retrieval.collection import Collection
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


def weight_table(collection: Collection, questions: list) -> dict[float, float]:
    """MRR@10 of hybrid search at every weight of GRID, for ``questions`` (``.text``, ``.chunk_id``)."""
    snapshot = collection.snapshot()
    texts = [q.text for q in questions]
    _, ids = snapshot.index.search(snapshot.encoder.encode(texts), DEPTH)
    dense = [[int(i) for i in row if i >= 0] for row in ids]
    lexical = [[key for key, _ in snapshot.bm25.search(text, DEPTH)] for text in texts]
    keys = sorted({key for rows in (dense, lexical) for row in rows for key in row})
    chunk_of = {key: chunk.chunk_id for key, chunk in collection.store.chunks_by_faiss_ids(keys).items()}
    table = {}
    for weight in GRID:
        total = 0.0
        for question, dense_row, lexical_row in zip(questions, dense, lexical):
            fused = reciprocal_rank_fusion([dense_row, lexical_row], RRF_K, hybrid_weights(weight))[:10]
            total += _reciprocal_rank([chunk_of.get(key, "") for key, _ in fused], question.chunk_id)
        table[weight] = total / len(questions)
    return table


def smoothed(table: dict[float, float]) -> dict[float, float]:
    weights = list(table)
    return {w: sum(table[v] for v in weights[max(0, i - 1):i + 2]) / len(weights[max(0, i - 1):i + 2])
            for i, w in enumerate(weights)}


def fit_dense_weight(collection: Collection, questions: list, min_questions: int = MIN_QUESTIONS) -> FusionFit:
    """Choose and store the serving encoder's fusion weight from ``questions``; too few: keep the current one."""
    current = collection.dense_weight
    if len(questions) < min_questions:
        return FusionFit(current, False, len(questions),
                         f"{len(questions)} held-out questions (< {min_questions}): kept dense weight {current:.2f}")
    table = weight_table(collection, questions)
    scores = smoothed(table)
    # Ties go to the weight nearest equal fusion: it is what was measured before any fitting.
    best = max(GRID, key=lambda w: (round(scores[w], 9), -abs(w - 0.5)))
    collection.set_dense_weight(best, questions=len(questions), mrr_at_best=round(table[best], 4),
                                mrr_at_equal=round(table[0.5], 4))
    return FusionFit(best, True, len(questions),
                     f"dense weight {best:.2f} (MRR@10 {table[best]:.3f}, equal weights {table[0.5]:.3f}) on "
                     f"{len(questions)} held-out questions",
                     {f"{w:.1f}": round(v, 4) for w, v in table.items()})
