"""Reciprocal rank fusion (Cormack et al., 2009), weighted per collection.

Equal weights suit no knowledge base in particular: on covid's FAQ the dense ranking alone beats the fused one by
0.06 nDCG@10, on emanualqa's manuals BM25-heavy fusion beats equal weights by 0.03 (benchs/results/fusion_weight.md).
So `kbqa distill` fits the dense ranking's weight on the teacher LLM's held-out questions of the collection
(distill/fusion_fit.py) and keeps it in the store's meta, tied to the encoder it was fitted for: another encoder
serves with equal weights until it is fitted in turn.
"""
from __future__ import annotations

import json

RRF_K = 60
FUSION_META = "hybrid_fusion"   # store meta: {"encoder": id, "dense_weight": w, ...how it was fitted}
EQUAL_WEIGHT = 0.5


def reciprocal_rank_fusion(rankings: list[list], k: int = RRF_K,
                           weights: list[float] | None = None) -> list[tuple[object, float]]:
    """Fuse ranked key lists into one: score(key) = sum over lists of weight / (k + rank), rank from 1."""
    scores: dict = {}
    for ranking, weight in zip(rankings, weights or [1.0] * len(rankings)):
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + weight / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], str(item[0])))


def hybrid_weights(dense_weight: float) -> list[float]:
    """(dense, BM25) list weights; 0.5 gives (1, 1), today's unweighted fusion exactly."""
    return [2 * dense_weight, 2 * (1 - dense_weight)]


def fusion_record(dense_weight: float, encoder_id: str, **fitted) -> str:
    return json.dumps({"encoder": encoder_id, "dense_weight": dense_weight, **fitted}, sort_keys=True)


def stored_dense_weight(record: str | None, encoder_id: str) -> float:
    """The weight fitted for ``encoder_id``; equal weights when none was, or it was fitted for another encoder."""
    if not record:
        return EQUAL_WEIGHT
    try:
        fitted = json.loads(record)
        weight = float(fitted["dense_weight"])
    except (ValueError, KeyError, TypeError):
        return EQUAL_WEIGHT   # a hand-edited or older record must not break search
    return weight if fitted.get("encoder") == encoder_id and 0.0 <= weight <= 1.0 else EQUAL_WEIGHT
