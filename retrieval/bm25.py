"""BM25 over chunk texts with bm25s (English stop words, Snowball stemming)."""
from __future__ import annotations

import logging
import os

# bm25s runs jax.lax.top_k at import when JAX is installed, and JAX then takes 75% of a GPU's memory (issue 16):
# a second kbqa process on that GPU died out of memory. BM25 selection is cheap on the CPU; a user's own setting wins.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import bm25s  # noqa: E402
import Stemmer  # noqa: E402

logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every index build at DEBUG
_STEMMER = Stemmer.Stemmer("english")


class BM25Index:
    def __init__(self, keys: list, texts: list[str]):
        self.keys = list(keys)
        self.retriever = bm25s.BM25()
        tokens = bm25s.tokenize(texts, stopwords="en", stemmer=_STEMMER, show_progress=False) if texts else None
        # A corpus with no indexable word at all (symbols, emoji, stop words) makes bm25s fail: keep it
        # searchable by the dense index alone rather than breaking the whole collection.
        self.empty = tokens is None or not tokens.vocab
        if not self.empty:
            self.retriever.index(tokens, show_progress=False)

    def search(self, query: str, k: int) -> list[tuple[object, float]]:
        if self.empty:
            return []
        tokens = bm25s.tokenize([query], stopwords="en", stemmer=_STEMMER, show_progress=False)
        if not tokens.vocab:  # only stop words
            return []
        docs, scores = self.retriever.retrieve(tokens, k=min(k, len(self.keys)), show_progress=False, n_threads=1)
        return [(self.keys[int(d)], float(s)) for d, s in zip(docs[0], scores[0]) if s > 0]
