"""FAISS index keyed by FAISS ids derived from chunk ids; inner product on normalised vectors.

Below ``EXACT_LIMIT`` vectors the index is exact (flat); above, HNSW (benchs/speed/bench_scale.py, README "Scale"):
MiniLM vectors are not clustered enough for IVF's few probes (recall@10 0.95 needed 512 of 4,000 lists at 1M
chunks, 7.6 ms a query), where HNSW reaches it in about a millisecond. HNSW cannot delete, so a removed vector is
a tombstone: its id becomes -1 in the id map (saved with the index) and searches skip ids below 0; a commit
rebuilds the index once tombstones pass ``HNSW_REBUILD_SHARE``. IVF files written before still load (searched
with ``ivf_nprobe``); the next commit rebuilds them as the kind their size calls for.
"""
from __future__ import annotations

import math
import os
import threading
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

from retrieval.filters import members

EXACT_LIMIT = 50_000
HNSW_M = 32                  # links a node; 64 gained little recall for twice the graph
HNSW_EF_CONSTRUCTION = 64
HNSW_REBUILD_SHARE = 0.2     # tombstones past this share of the index: the next commit builds it afresh
FILTERED_EXACT_LIMIT = 20_000   # filtered HNSW search scores up to this many kept vectors directly
POSTFILTER_SHARE = 0.05         # a filter keeping this share of rows or more: the graph's wider top, then filtered
_LIVE = faiss.IDSelectorRange(0, 1 << 62)   # every real id (60-bit, >= 0); tombstones are -1


def hnsw_ef(n: int) -> int:
    """Candidates a query explores (benchs/results/bench_scale_index_choice_hnsw.md, recall@10 against exact search):
    384 gave 0.970 at 100k chunks (0.82 ms) and 0.953 at 1M; 512 gave 0.960 at 1M (2.0 ms)."""
    return 384 if n <= 200_000 else 512


def ivf_nprobe(nlist: int) -> int:
    """Lists a query scans: recall@10 >= 0.95 at 100k and 1M chunks (256 of 1,264; 512 of 4,000), fitted between."""
    return min(nlist, math.ceil(3.6 * nlist ** 0.6))


def gpu_count() -> int:
    # faiss-cpu has no GPU functions at all; faiss-gpu reports the devices it sees.
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


class _ReadWriteLock:
    """Searches share the index; a commit's in-place change waits for the running ones and holds new ones off (an id
    map reallocated under a running search is a crash, not a wrong answer). A waiting writer goes first."""

    def __init__(self):
        self._cond = threading.Condition()
        self._readers = self._writers_waiting = 0
        self._writing = False

    @contextmanager
    def reading(self):
        with self._cond:
            self._cond.wait_for(lambda: not self._writing and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextmanager
    def writing(self):
        with self._cond:
            self._writers_waiting += 1
            self._cond.wait_for(lambda: not self._writing and self._readers == 0)
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


class VectorIndex:
    def __init__(self, index: faiss.Index):
        self.cpu_index = index
        self._lock = _ReadWriteLock()
        self._hnsw = (isinstance(index, faiss.IndexIDMap2)
                      and isinstance(faiss.downcast_index(index.index), faiss.IndexHNSW))
        self.tombstones = int((faiss.vector_to_array(index.id_map) < 0).sum()) if self._hnsw else 0
        self._positions: tuple[np.ndarray, np.ndarray] | None = None   # (sorted ids, their rows), for filters
        self._refresh_device()

    @property
    def on_gpu(self) -> bool:
        return self.index is not self.cpu_index

    @property
    def size(self) -> int:
        """Live vectors (tombstones not counted)."""
        return self.cpu_index.ntotal - self.tombstones

    @property
    def kind(self) -> str:
        return "hnsw" if self._hnsw else "ivf" if isinstance(self.cpu_index, faiss.IndexIVF) else "flat"

    @property
    def needs_rebuild(self) -> bool:
        return self.would_need_rebuild(0, 0)

    def would_need_rebuild(self, removing: int, adding: int) -> bool:
        """Whether tombstones pass their share once ``removing`` ids are removed and ``adding`` vectors added."""
        if not self._hnsw:
            return False
        return self.tombstones + removing > HNSW_REBUILD_SHARE * max(1, self.cpu_index.ntotal + adding)

    def remove(self, faiss_ids: np.ndarray) -> None:
        faiss_ids = np.asarray(faiss_ids, dtype=np.int64)
        if not len(faiss_ids):
            return
        with self._lock.writing():
            if self._hnsw:
                id_map = faiss.vector_to_array(self.cpu_index.id_map)
                gone = np.isin(id_map, faiss_ids)
                id_map[gone] = -1
                faiss.copy_array_to_vector(id_map, self.cpu_index.id_map)
                self.cpu_index.construct_rev_map()
                self.tombstones += int(gone.sum())
            else:
                self.cpu_index.remove_ids(faiss_ids)
            self._refresh_device()

    def add(self, faiss_ids: np.ndarray, vectors: np.ndarray) -> None:
        with self._lock.writing():
            self.cpu_index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32),
                                        np.asarray(faiss_ids, dtype=np.int64))
            self._refresh_device()

    def _refresh_device(self) -> None:
        # The GPU copy is a clone: after a change on the CPU side, copy again.
        self._positions = None
        self.index = self.cpu_index
        if gpu_count() > 0 and not self._hnsw and _gpu_supported(self.cpu_index):   # faiss-gpu has no HNSW
            self.index = faiss.index_cpu_to_all_gpus(self.cpu_index)

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, dim: int, exact_limit: int = EXACT_LIMIT) -> "VectorIndex":
        n = len(ids)
        if n < exact_limit:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        else:
            graph = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
            index = faiss.IndexIDMap2(graph)
            graph.this.disown()
            index.own_fields = True
        if n:
            index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
        return cls(index)

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores (Q, k), faiss ids (Q, k)); id -1 where fewer than k vectors exist. ``allowed``: sorted FAISS ids a
        filter keeps; the search is then exact over them (see ``_search_allowed``)."""
        if self.size == 0 or (allowed is not None and not len(allowed)):
            q = len(queries)
            return np.zeros((q, 0), dtype=np.float32), np.zeros((q, 0), dtype=np.int64)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        with self._lock.reading():
            if allowed is not None:
                return self._search_allowed(queries, k, allowed)
            if not self._hnsw:
                return self.index.search(queries, min(k, self.size))
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(hnsw_ef(self.size), k)
            if self.tombstones:
                params.sel = _LIVE
            return self.index.search(queries, min(k, self.size), params=params)

    def _search_allowed(self, queries: np.ndarray, k: int, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Filtered search (bench: benchs/speed/bench_filters.py). A flat index scans with FAISS's id selector:
        exact. Over HNSW, whose graph walk with a selector slows as a filter widens (5x at half the rows): a wide
        filter takes the graph's unfiltered top ``2k / share`` and keeps the allowed; a narrow one scores its few
        vectors directly (exact); in between, or when the wide way came back short, the selector walk."""
        k = min(k, len(allowed))
        if not self._hnsw:
            params = faiss.SearchParameters()
            params.sel = faiss.IDSelectorBatch(allowed)
            return self.cpu_index.search(queries, k, params=params)
        share = len(allowed) / max(1, self.size)
        if share >= POSTFILTER_SHARE:
            wide = min(self.size, math.ceil(2 * k / share))
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(hnsw_ef(self.size), wide)
            if self.tombstones:
                params.sel = _LIVE
            scores, ids = self.cpu_index.search(queries, wide, params=params)
            kept = members(ids, allowed)
            if (kept.sum(axis=1) >= k).all():
                order = np.argsort(~kept, axis=1, kind="stable")[:, :k]   # the allowed ones, best first
                return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)
        if len(allowed) <= FILTERED_EXACT_LIMIT:
            kept_ids, vectors = self._stored_rows(allowed)
            scores = queries @ vectors.T
            top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
            return np.take_along_axis(scores, top, axis=1), kept_ids[top]
        params = faiss.SearchParametersHNSW()
        params.efSearch = min(4096, max(hnsw_ef(self.size), k, int(hnsw_ef(self.size) / share)))
        params.sel = faiss.IDSelectorBatch(allowed)
        return self.cpu_index.search(queries, k, params=params)

    def _stored_rows(self, faiss_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(the ids, their vectors) from the HNSW graph's flat storage, without copying it whole; in storage order,
        which reads memory forwards (3.0 ms for 10k of 1M rows against 5.6 ms in id order)."""
        if self._positions is None:   # id -> row, built on the first filtered search after a change
            id_map = faiss.vector_to_array(self.cpu_index.id_map)
            order = np.argsort(id_map, kind="stable")
            self._positions = (id_map[order], order)
        sorted_ids, order = self._positions
        storage = faiss.downcast_index(faiss.downcast_index(self.cpu_index.index).storage)
        xb = faiss.rev_swig_ptr(storage.get_xb(), storage.ntotal * storage.d).reshape(storage.ntotal, storage.d)
        rows = order[np.searchsorted(sorted_ids, faiss_ids)]
        forwards = np.argsort(rows, kind="stable")
        return faiss_ids[forwards], np.take(xb, rows[forwards], axis=0)

    def save(self, path: Path) -> None:
        """Write aside, then rename: a crash leaves whatever was at ``path`` before."""
        path = Path(path)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        with self._lock.reading():
            faiss.write_index(self.cpu_index, str(tmp))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> "VectorIndex":
        index = faiss.read_index(str(path))
        if isinstance(index, faiss.IndexIVF):   # set on every load: files written before keep their old probe count
            index.nprobe = ivf_nprobe(index.nlist)
        return cls(index)


def _gpu_supported(index: faiss.Index) -> bool:
    return isinstance(index, (faiss.IndexIDMap, faiss.IndexFlat, faiss.IndexIVFFlat))
