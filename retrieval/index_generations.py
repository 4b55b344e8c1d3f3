"""The indexes of each committed generation of a collection, beside its store: ``index-<generation>.faiss`` and
``bm25/gen-<generation>.npz`` (with the BM25 main segment it names, retrieval/bm25.py).

A commit writes the next generation's files before the store's transaction commits, so a crash leaves the old
generation's files, the ones the committed store still names. Readers open the files of the committed generation and
rebuild them from the stored vectors and texts when they are missing, unreadable or out of step with the store.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ingest.language import ENGLISH
from ingest.store import ChunkStore
from retrieval.bm25 import ANALYSIS, BM25Index
from retrieval.model_store import sweep_dead_writers
from retrieval.vector_index import EXACT_LIMIT, VectorIndex

log = logging.getLogger(__name__)


class IndexGenerations:
    def __init__(self, directory: Path, store: ChunkStore, exact_limit: int = EXACT_LIMIT):
        self.directory = Path(directory)
        self.store = store
        self.exact_limit = exact_limit

    def path(self, generation: int) -> Path:
        return self.directory / f"index-{generation}.faiss"

    @property
    def bm25_dir(self) -> Path:
        return self.directory / "bm25"

    @staticmethod
    def bm25_name(generation: int) -> str:
        return f"gen-{generation}"

    def build_bm25(self) -> BM25Index:
        chunks = self.store.all_chunks()
        language_of = self.store.document_languages()
        return BM25Index.build([c.faiss_id for c in chunks], [c.embedding_text() for c in chunks],
                               [language_of.get(c.doc_id, ENGLISH) for c in chunks])

    def save_bm25(self, bm25: BM25Index, generation: int) -> None:
        bm25.save(self.bm25_dir, self.bm25_name(generation))

    def open_bm25(self, generation: int) -> BM25Index:
        """The generation's saved BM25 (memory-mapped), rebuilt from the stored texts when it is missing,
        unreadable or out of step with the store (an older kbqa wrote no BM25 files, or analysed every language with
        English rules)."""
        name = self.bm25_name(generation)
        bm25 = None
        if (self.bm25_dir / f"{name}.npz").exists():
            try:
                bm25 = BM25Index.load(self.bm25_dir, name)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("BM25 %s unreadable (%s); rebuilding from the store", name, exc)
        if bm25 is None or bm25.size != self.store.counts()["chunks"] or (
                bm25.analysis != ANALYSIS and set(self.store.languages()) - {ENGLISH}):
            bm25 = self.build_bm25()
            if generation > 0:
                self.save_bm25(bm25, generation)
        return bm25

    def build(self, dim: int) -> VectorIndex:
        """A fresh index over every stored vector (exact below ``exact_limit`` chunks, approximate above)."""
        ids, vectors = self.store.all_vectors()
        return VectorIndex.build(ids, vectors, dim, self.exact_limit)

    def commit(self, generation: int, dim: int, current: VectorIndex | None, removed_ids: list[int],
               added_ids: list[int], added_vectors: list[np.ndarray]) -> VectorIndex:
        """Write generation ``generation``'s index (inside the store's open transaction, whose chunks already hold
        the change): ``current`` (the served index of the generation before) with the change applied, or, without
        one or when the index type must switch, a fresh build from every stored vector. Returns the index written, so
        the committing process serves it without reading the file back."""
        wants_exact = self.store.counts()["chunks"] < self.exact_limit
        # Built afresh also once for an IVF index an older kbqa wrote, and when HNSW tombstones would pile up.
        if current is None or wants_exact != (current.kind == "flat") or current.kind == "ivf" \
                or current.would_need_rebuild(len(removed_ids), len(added_ids)):
            index = self.build(dim)
        else:   # update the served index in place: it goes on serving as this generation's (Collection._published)
            index = current
            index.remove(np.array(removed_ids, dtype=np.int64))
            if added_ids:
                index.add(np.array(added_ids, dtype=np.int64), np.concatenate(added_vectors))
        index.save(self.path(generation))
        return index

    def drop(self) -> None:
        """Everything kept outside the collection's folder (nothing, for FAISS files): the collection is deleted."""

    def open(self, generation: int, dim: int) -> VectorIndex:
        path = self.path(generation)
        index = None
        if path.exists():
            try:
                index = VectorIndex.load(path)
            except RuntimeError as exc:  # faiss reports a corrupt file this way
                log.warning("index %s unreadable (%s); rebuilding from the store", path, exc)
        if index is None or index.size != self.store.counts()["chunks"]:
            index = self.build(dim)
            if generation > 0:
                index.save(path)
        return index

    def prune(self, keep: int) -> None:
        """Delete the files of every generation but ``keep`` (called after ``keep`` is committed), and temporary
        index files that a killed writer left (``*.tmp<pid>`` whose process is gone)."""
        for stale in self.directory.glob("index-*.faiss"):
            if stale.name != self.path(keep).name:
                stale.unlink(missing_ok=True)
        sweep_dead_writers(self.directory, "index-*.faiss.tmp*")
        if self.bm25_dir.exists():
            BM25Index.prune(self.bm25_dir, self.bm25_name(keep))
