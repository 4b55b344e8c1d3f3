"""Vectors in Milvus instead of FAISS files (KBQA_VECTOR_STORE=milvus): for collections past one box's memory.

``pymilvus`` talks to a Milvus server (``KBQA_MILVUS_URI=http://host:19530``, ``KBQA_MILVUS_TOKEN``) or, given a
local file path, to milvus-lite embedded in this process (the same client API; tests use it). The chunk store,
BM25 and the generation counter stay in the collection's folder.

How a commit stays atomic (the FAISS store writes a new file per generation; Milvus has no files to swap):
every row carries the generation that added it and the one that removed it (``removed`` = never until then). A
reader of committed generation G searches with the filter ``added <= G and removed > G``. A commit of G+1 inserts
its new rows with ``added = G+1`` and re-writes removed rows with ``removed = G+1``: readers of G see neither
change, and once the store's transaction commits G+1 they see both at once. A crash before that commit leaves rows
tagged G+1 that no reader of G sees; the next commit clears them first. After a commit, rows no generation from
the previous one on can see are deleted. A new encoder (promotion, other dimension) writes a whole new Milvus
collection and names it in the store (meta ``milvus_collection``) in the same transaction; the old one is dropped.
"""
from __future__ import annotations

import logging
import re
import uuid
from pathlib import Path

import numpy as np

from ingest.store import ChunkStore
from retrieval.index_generations import IndexGenerations
from retrieval.vector_index import EXACT_LIMIT

log = logging.getLogger(__name__)
NEVER = 2**62           # ``removed`` of a row no generation has removed
BATCH = 2_000           # rows per insert, upsert and query (gRPC messages and query windows are capped)
META = "milvus_collection"   # store meta: the Milvus collection the committed generation lives in
UID = "milvus_uid"


class MilvusUnavailable(RuntimeError):
    """KBQA_VECTOR_STORE=milvus, and the Milvus named by KBQA_MILVUS_URI cannot be reached or opened."""


def connect(uri: str, token: str | None = None):
    """A client for a server URI, or for milvus-lite on a local file (its folder is created)."""
    try:
        from pymilvus import MilvusClient
    except ImportError as exc:
        raise MilvusUnavailable("KBQA_VECTOR_STORE=milvus needs pymilvus: pip install 'kbqa[milvus]'") from exc
    if "://" not in uri:
        Path(uri).parent.mkdir(parents=True, exist_ok=True)
    try:
        return MilvusClient(uri, token=token or "")
    except Exception as exc:   # pymilvus raises its own classes for refused, unauthorised, bad file
        raise MilvusUnavailable(f"cannot open Milvus at {uri}: {exc}") from exc


class MilvusIndex:
    """The vectors one committed generation sees: the searchable half of VectorIndex's interface."""

    kind = "milvus"
    on_gpu = False

    def __init__(self, client, name: str, generation: int):
        self.client, self.name, self.generation = client, name, generation

    @property
    def view(self) -> str:
        return f"added <= {self.generation} and removed > {self.generation}"

    @property
    def size(self) -> int:
        rows = self.client.query(self.name, filter=self.view, output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(scores (Q, k), faiss ids (Q, k)), id -1 where fewer than k vectors exist, as VectorIndex.search.
        ``allowed``: the FAISS ids a metadata filter keeps, sent as an id list in Milvus's boolean expression (the
        metadata itself stays in the store)."""
        q = len(queries)
        scores, ids = np.zeros((q, k), dtype=np.float32), np.full((q, k), -1, dtype=np.int64)
        if k <= 0 or q == 0 or (allowed is not None and not len(allowed)):
            return scores[:, :0], ids[:, :0]
        view = self.view if allowed is None else f"{self.view} and faiss_id in {[int(i) for i in allowed]}"
        results = self.client.search(self.name, data=np.asarray(queries, dtype=np.float32).tolist(), limit=k,
                                     filter=view, output_fields=["faiss_id"],
                                     search_params={"metric_type": "IP"})
        for row, hits in enumerate(results):
            for col, hit in enumerate(hits[:k]):
                scores[row, col], ids[row, col] = hit["distance"], hit["entity"]["faiss_id"]
        return scores, ids


class MilvusGenerations(IndexGenerations):
    """IndexGenerations with the vectors in Milvus (see the module's docstring); BM25 files stay local."""

    def __init__(self, directory: Path, store: ChunkStore, exact_limit: int = EXACT_LIMIT, *, client):
        super().__init__(directory, store, exact_limit)
        self.client = client
        # Milvus names allow letters, digits and _: a readable part plus an id the store keeps, so two kbqa homes
        # (or a re-created collection of the same name) never share a Milvus collection on one server.
        uid = store.get_meta(UID)
        if uid is None:
            uid = uuid.uuid4().hex[:12]
            store.set_meta(UID, uid)
        readable = re.sub(r"[^A-Za-z0-9_]", "_", self.directory.name)[:40]
        self.prefix = f"kbqa_{readable}_{uid}_"

    # --- writing ----------------------------------------------------------------------------------
    def _create(self, dim: int) -> str:
        from pymilvus import DataType

        epochs = [int(n[len(self.prefix):]) for n in self._own_collections() if n[len(self.prefix):].isdigit()]
        name = f"{self.prefix}{max(epochs, default=0) + 1}"
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=48)   # "<faiss id>:<added>"
        schema.add_field("faiss_id", DataType.INT64)
        schema.add_field("added", DataType.INT64)
        schema.add_field("removed", DataType.INT64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        params = self.client.prepare_index_params()
        params.add_index(field_name="vector", index_type="AUTOINDEX", metric_type="IP")
        self.client.create_collection(name, schema=schema, index_params=params, consistency_level="Strong")
        return name

    def _insert(self, name: str, ids, vectors, generation: int) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        for start in range(0, len(ids), BATCH):
            self.client.insert(name, [
                {"pk": f"{int(i)}:{generation}", "faiss_id": int(i), "added": generation, "removed": NEVER,
                 "vector": v.tolist()} for i, v in zip(ids[start:start + BATCH], vectors[start:start + BATCH])])

    def _retag(self, name: str, filter_: str, removed: int) -> None:
        """Re-write the rows matching ``filter_`` with ``removed`` (Milvus updates a row by upserting it whole), a
        batch at a time: a re-written row no longer matches, so this ends, and no query passes Milvus's window."""
        while True:
            rows = self.client.query(name, filter=filter_, output_fields=["pk", "faiss_id", "added", "vector"],
                                     limit=BATCH)
            if not rows:
                return
            self.client.upsert(name, [{"pk": r["pk"], "faiss_id": r["faiss_id"], "added": r["added"],
                                       "removed": removed, "vector": [float(x) for x in r["vector"]]} for r in rows])

    def _usable(self, name: str | None) -> bool:
        """Whether ``name`` exists, loaded for search and query. A collection another process wrote (the last
        `kbqa ingest`, milvus-lite reopened) comes back 'released': Milvus refuses every query until it is loaded."""
        if name is None or not self.client.has_collection(name):
            return False
        self.client.load_collection(name)   # a no-op when it is loaded already
        return True

    def commit(self, generation: int, dim: int, current, removed_ids: list[int], added_ids: list[int],
               added_vectors: list[np.ndarray]) -> None:
        name = self.store.get_meta(META)
        if current is None or not self._usable(name):
            name = self._create(dim)       # a fresh collection: every stored vector, named in this transaction
            ids, vectors = self.store.all_vectors()
            self._insert(name, ids, vectors, generation)
            self.store.set_meta(META, name)
        else:
            before = generation - 1
            # What a commit that crashed before its store transaction left: rows no committed generation sees.
            self.client.delete(name, filter=f"added > {before}")
            self._retag(name, f"removed > {before} and removed < {NEVER}", NEVER)
            if removed_ids:
                for start in range(0, len(removed_ids), BATCH):
                    chunk = [int(i) for i in removed_ids[start:start + BATCH]]
                    self._retag(name, f"faiss_id in {chunk} and added <= {before} and removed == {NEVER}", generation)
            if added_ids:
                self._insert(name, added_ids, np.concatenate(added_vectors), generation)
        self.client.flush(name)

    # --- reading ----------------------------------------------------------------------------------
    def open(self, generation: int, dim: int) -> MilvusIndex:
        name = self.store.get_meta(META)
        if self._usable(name):
            index = MilvusIndex(self.client, name, generation)
            if index.size == self.store.counts()["chunks"]:
                return index
            log.warning("Milvus collection %s is out of step with the store; rebuilding it", name)
        elif generation > 0:
            log.warning("Milvus has no vectors for collection %s; rebuilding them from the store", self.directory.name)
        name = self._create(dim)
        ids, vectors = self.store.all_vectors()
        self._insert(name, ids, vectors, generation)
        self.client.flush(name)
        self.store.set_meta(META, name)
        return MilvusIndex(self.client, name, generation)

    # --- clean-up ---------------------------------------------------------------------------------
    def _own_collections(self) -> list[str]:
        return [n for n in self.client.list_collections() if n.startswith(self.prefix)]

    def prune(self, keep: int) -> None:
        """Rows that no generation from ``keep - 1`` on sees, and Milvus collections the store does not name."""
        super().prune(keep)
        name = self.store.get_meta(META)
        for other in self._own_collections():
            if other != name:
                self.client.drop_collection(other)
        if name is not None and self.client.has_collection(name):
            self.client.delete(name, filter=f"removed < {keep}")

    def drop(self) -> None:
        for name in self._own_collections():
            self.client.drop_collection(name)
