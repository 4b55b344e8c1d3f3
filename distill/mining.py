"""Training triples: (pseudo-query, its chunk, a hard negative from another document), scored by the teacher."""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from distill.pseudo_queries import PseudoQuery


@dataclass(frozen=True)
class Triple:
    query: str
    positive: int        # index into the passage list
    negative: int
    teacher_margin: float


def mine_triples(queries: list[PseudoQuery], query_vectors: np.ndarray, passage_vectors: np.ndarray,
                 passage_ids: list[str], passage_docs: list[str], from_rank: int, to_rank: int,
                 seed: int = 0) -> list[Triple]:
    """For each query pick a negative among the scorer's ranks [from_rank, to_rank) of passages from
    other documents (same-document chunks are too often true answers too), by teacher cosine. The margin
    tells the student how much worse it is."""
    rng = random.Random(seed)
    position = {cid: i for i, cid in enumerate(passage_ids)}
    scores = query_vectors @ passage_vectors.T  # (Q, N) teacher cosines
    triples = []
    for row, query in enumerate(queries):
        positive = position[query.chunk_id]
        order = np.argsort(-scores[row])
        others = [int(i) for i in order[: to_rank + 20] if passage_docs[i] != query.doc_id][from_rank:to_rank]
        if not others:
            continue
        negative = rng.choice(others)
        triples.append(Triple(query.text, positive, negative, float(scores[row, positive] - scores[row, negative])))
    return triples
