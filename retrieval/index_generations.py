"""One FAISS index file per committed generation of a collection: ``index-<generation>.faiss`` beside its store.

A commit writes the next generation's file before the store's transaction commits, so a crash leaves the old
generation's file, the one the committed store still names. Readers open the file of the committed generation and
rebuild it from the stored vectors when it is missing, unreadable or out of step with the store.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ingest.store import ChunkStore
from retrieval.models import pid_alive
from retrieval.vector_index import EXACT_LIMIT, VectorIndex

log = logging.getLogger(__name__)


class IndexGenerations:
    def __init__(self, directory: Path, store: ChunkStore, exact_limit: int = EXACT_LIMIT):
        self.directory = Path(directory)
        self.store = store
        self.exact_limit = exact_limit

    def path(self, generation: int) -> Path:
        return self.directory / f"index-{generation}.faiss"

    def build(self, dim: int) -> VectorIndex:
        """A fresh index over every stored vector (exact below ``exact_limit`` chunks, approximate above)."""
        ids, vectors = self.store.all_vectors()
        return VectorIndex.build(ids, vectors, dim, self.exact_limit)

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
        for partial in self.directory.glob("index-*.faiss.tmp*"):
            pid = partial.name.rsplit(".tmp", 1)[-1]
            if pid.isdigit() and not pid_alive(int(pid)):
                partial.unlink(missing_ok=True)
