"""Reciprocal rank fusion (Cormack et al., 2009)."""
from __future__ import annotations

RRF_K = 60


def reciprocal_rank_fusion(rankings: list[list], k: int = RRF_K) -> list[tuple[object, float]]:
    """Fuse ranked key lists into one: score(key) = sum over lists of 1 / (k + rank), rank from 1."""
    scores: dict = {}
    for ranking in rankings:
        for rank, key in enumerate(ranking, start=1):
            scores[key] = scores.get(key, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], str(item[0])))
