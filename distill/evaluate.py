"""Held-out pseudo-query retrieval: does the encoder put the chunk a query came from on top?"""
from __future__ import annotations

import numpy as np


def chunk_retrieval_metrics(query_vectors: np.ndarray, passage_vectors: np.ndarray, gold: list[int]) -> dict[str, float]:
    """MRR@10 and hit@1/hit@10 of the gold passage index per query (vectors L2-normalised)."""
    if not gold:
        return {"mrr@10": 0.0, "hit@1": 0.0, "hit@10": 0.0, "queries": 0}
    scores = query_vectors @ passage_vectors.T                   # (Q, N)
    gold_scores = scores[np.arange(len(gold)), gold][:, None]
    ranks = (scores > gold_scores).sum(1)                        # 0 = on top
    return {"mrr@10": float(np.mean(np.where(ranks < 10, 1.0 / (ranks + 1), 0.0))),
            "hit@1": float(np.mean(ranks == 0)), "hit@10": float(np.mean(ranks < 10)), "queries": len(gold)}
