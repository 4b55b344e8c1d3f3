"""FAISS index keyed by FAISS ids derived from chunk ids; inner product on normalised vectors.

Below ``EXACT_LIMIT`` vectors the index is exact (flat); above, IVF-flat, which keeps
``remove_ids`` (HNSW cannot delete). The limit comes from benchs/bench_index.py on a 2-core box.
How many lists a query probes comes from benchs/bench_scale.py (README "Scale"): MiniLM vectors are not
clustered enough for IVF's usual few probes (16 probes found 64% of the exact top 10 at 100k chunks, 69% at 1M).
Recall@10 reached 0.95 with 256 of 1,264 lists at 100k and 512 of 4,000 at 1M: the probe count grows like
nlist^0.6 through those two points.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import faiss
import numpy as np

EXACT_LIMIT = 50_000


def ivf_nprobe(nlist: int) -> int:
    """Lists a query scans: recall@10 >= 0.95 at 100k and 1M chunks (256 of 1,264; 512 of 4,000), fitted between."""
    return min(nlist, math.ceil(3.6 * nlist ** 0.6))


def gpu_count() -> int:
    # faiss-cpu has no GPU functions at all; faiss-gpu reports the devices it sees.
    return faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0


class VectorIndex:
    def __init__(self, index: faiss.Index):
        self.cpu_index = index
        self._refresh_device()

    @property
    def on_gpu(self) -> bool:
        return self.index is not self.cpu_index

    @property
    def size(self) -> int:
        return self.cpu_index.ntotal

    @property
    def kind(self) -> str:
        return "ivf" if isinstance(self.cpu_index, faiss.IndexIVF) else "flat"

    def remove(self, faiss_ids: np.ndarray) -> None:
        self.cpu_index.remove_ids(np.asarray(faiss_ids, dtype=np.int64))
        self._refresh_device()

    def add(self, faiss_ids: np.ndarray, vectors: np.ndarray) -> None:
        self.cpu_index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.asarray(faiss_ids, dtype=np.int64))
        self._refresh_device()

    def _refresh_device(self) -> None:
        # The GPU copy is a clone: after a change on the CPU side, copy again.
        self.index = self.cpu_index
        if gpu_count() > 0 and _gpu_supported(self.cpu_index):
            self.index = faiss.index_cpu_to_all_gpus(self.cpu_index)

    @classmethod
    def build(cls, ids: np.ndarray, vectors: np.ndarray, dim: int, exact_limit: int = EXACT_LIMIT) -> "VectorIndex":
        n = len(ids)
        if n < exact_limit:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        else:
            # IVF keeps ids itself; wrapped in IndexIDMap its remove_ids maps ids wrongly.
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, int(4 * math.sqrt(n)), faiss.METRIC_INNER_PRODUCT)
            index.train(vectors)
            index.nprobe = ivf_nprobe(index.nlist)
            quantizer.this.disown()
            index.own_fields = True
        if n:
            index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids.astype(np.int64))
        return cls(index)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores (Q, k), faiss ids (Q, k)); id -1 where fewer than k vectors exist."""
        if self.size == 0:
            q = len(queries)
            return np.zeros((q, 0), dtype=np.float32), np.zeros((q, 0), dtype=np.int64)
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, self.size))

    def save(self, path: Path) -> None:
        """Write aside, then rename: a crash leaves whatever was at ``path`` before."""
        path = Path(path)
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
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
