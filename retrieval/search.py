"""Dense, BM25 and hybrid (reciprocal rank fusion) search over one consistent snapshot of a collection."""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal, get_args

from ingest.language import ENGLISH
from ingest.records import Chunk
from ingest.store import ChunkStore
from retrieval.bm25 import BM25Index
from retrieval.encoder import TextEncoder, encode_queries
from retrieval.fusion import EQUAL_WEIGHT, hybrid_weights, reciprocal_rank_fusion
from retrieval.vector_index import VectorIndex

SearchMode = Literal["dense", "bm25", "hybrid"]
SEARCH_MODES: tuple[str, ...] = get_args(SearchMode)
DEFAULT_MODE = "hybrid"  # measured better than dense alone: see README and benchs/quality/retrieval_quality.py
# BM25 needs no query vector: it runs here while the query is encoded and FAISS searched (README "Scale").
_LEXICAL = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1), thread_name_prefix="kbqa-bm25")


@dataclass
class SearchHit:
    chunk: Chunk
    score: float                     # ranking score: cosine (dense), BM25, or RRF (hybrid)
    dense_score: float | None = None  # cosine between query and passage: the relevance gate uses it
    metadata: dict = field(default_factory=dict)   # its document's (retrieval/filters.py filters on it)


class SnapshotMoved(RuntimeError):
    """A commit removed chunks this snapshot ranked: search again on the committed generation."""


@dataclass(frozen=True)
class SearchSnapshot:
    """An (encoder, index, BM25) triple of one generation: a promotion swapping them never mixes two."""
    encoder: TextEncoder
    index: VectorIndex
    bm25: BM25Index
    dense_weight: float = EQUAL_WEIGHT   # the dense ranking's share in hybrid fusion (retrieval/fusion.py)

    def search(self, query: str, k: int, mode: str, store: ChunkStore, store_lock: threading.RLock,
               strict: bool = True, allowed=None, language: str = ENGLISH) -> list[SearchHit]:
        """The top ``k``. ``strict``: raise SnapshotMoved when a concurrent commit removed a ranked chunk, rather
        than answer with fewer hits; otherwise such hits are left out. ``allowed``: the sorted FAISS ids a filter
        keeps; both rankings are restricted to them before ranking. ``language``: the query's (BM25 analyses it
        so)."""
        if mode not in SEARCH_MODES:
            raise ValueError(f"unknown search mode {mode!r}; use one of {SEARCH_MODES}")
        depth = k if mode == "dense" else max(4 * k, 40)
        lexical = (_LEXICAL.submit(self.bm25.search, query, k if mode == "bm25" else depth, allowed, language)
                   if mode != "dense" else None)
        query_vector = encode_queries(self.encoder, [query])  # (1, D): the BM25-only hits' cosines need it too
        dense: dict[int, float] = {}
        if mode != "bm25":   # BM25 mode ranks without FAISS; its hits' cosines come from the stored vectors
            scores, ids = self.index.search(query_vector, depth, allowed)
            dense = {int(i): float(s) for i, s in zip(ids[0], scores[0]) if i >= 0}
        if mode == "dense":
            ranked = sorted(dense.items(), key=lambda item: -item[1])[:k]
        elif mode == "bm25":
            ranked = lexical.result()
        else:
            ranked = reciprocal_rank_fusion([list(dense), [key for key, _ in lexical.result()]],
                                            weights=hybrid_weights(self.dense_weight))[:k]
        with store_lock:  # the store is shared with writers
            chunks, metadata = store.hits_by_faiss_ids([key for key, _ in ranked])
            missing = [chunks[key].chunk_id for key, _ in ranked if key not in dense and key in chunks]
            stored = store.vectors_for(missing)
        if strict and any(key not in chunks for key, _ in ranked):
            raise SnapshotMoved(f"a commit removed {sum(key not in chunks for key, _ in ranked)} ranked chunks")
        hits = []
        for key, score in ranked:
            chunk = chunks.get(key)
            if chunk is None:  # a concurrent ingest removed it between the two reads
                continue
            cosine = dense.get(key)
            if cosine is None and chunk.chunk_id in stored:   # a BM25-only hit: its cosine from the stored vector
                cosine = float(stored[chunk.chunk_id] @ query_vector[0])
            hits.append(SearchHit(chunk=chunk, score=float(score), dense_score=cosine,
                                  metadata=metadata.get(chunk.doc_id, {})))
        return hits
