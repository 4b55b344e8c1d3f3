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
    query_index: int = -1  # row of the query's teacher vector, for listwise distillation


def bm25_scores(passages: list[str], queries: list[str]) -> np.ndarray:
    """(Q, N) BM25 scores, each row divided by its maximum (0..1), for fusing with the teacher's cosines."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(passages, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    rows = []
    for query in queries:
        tokens = bm25s.tokenize([query], stopwords="en", stemmer=stemmer, show_progress=False, return_ids=False)[0]
        scores = retriever.get_scores(tokens) if tokens else np.zeros(len(passages))
        rows.append(scores / scores.max() if scores.max() > 0 else scores)
    return np.array(rows, dtype=np.float32)


def mine_triples(queries: list[PseudoQuery], query_vectors: np.ndarray, passage_vectors: np.ndarray,
                 passage_ids: list[str], passage_docs: list[str], from_rank: int, to_rank: int,
                 extra_scores: np.ndarray | None = None, seed: int = 0) -> list[Triple]:
    """For each query pick a negative among the scorer's ranks [from_rank, to_rank) of passages from
    other documents (same-document chunks are too often true answers too). Scorer = teacher cosine
    (+ extra_scores, e.g. weighted BM25). The margin tells the student how much worse it is."""
    rng = random.Random(seed)
    position = {cid: i for i, cid in enumerate(passage_ids)}
    scores = query_vectors @ passage_vectors.T  # (Q, N) teacher cosines
    if extra_scores is not None:
        scores = scores + extra_scores
    triples = []
    for row, query in enumerate(queries):
        positive = position[query.chunk_id]
        order = np.argsort(-scores[row])
        others = [int(i) for i in order[: to_rank + 20] if passage_docs[i] != query.doc_id][from_rank:to_rank]
        if not others:
            continue
        negative = rng.choice(others)
        triples.append(Triple(query.text, positive, negative, float(scores[row, positive] - scores[row, negative]), row))
    return triples
