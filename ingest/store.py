"""SQLite document store: files, documents, chunks and their vectors, for one collection.

The store is the source of truth. The FAISS and BM25 indexes are caches rebuilt from it;
``generation`` goes up by one with every committed change so caches can tell they are stale.
"""
from __future__ import annotations

import json
import sqlite3
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np

from ingest.language import ENGLISH, language_code
from ingest.records import Chunk, Document

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    root TEXT NOT NULL, path TEXT NOT NULL, content_hash TEXT NOT NULL,
    PRIMARY KEY (root, path));
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY, root TEXT NOT NULL, path TEXT NOT NULL,
    source TEXT NOT NULL, title TEXT NOT NULL, metadata TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS documents_by_file ON documents (root, path);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id TEXT PRIMARY KEY, faiss_id INTEGER NOT NULL UNIQUE, doc_id TEXT NOT NULL,
    source TEXT NOT NULL, title TEXT NOT NULL, heading TEXT NOT NULL, position INTEGER NOT NULL,
    text TEXT NOT NULL, vector BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks (doc_id);
-- chunks the serving (distilled) encoder was trained on: the rest is "newer than the encoder"
CREATE TABLE IF NOT EXISTS distilled (chunk_id TEXT PRIMARY KEY);
"""


def _row_to_chunk(row: sqlite3.Row) -> Chunk:
    return Chunk(doc_id=row["doc_id"], source=row["source"], title=row["title"], heading=row["heading"],
                 position=row["position"], text=row["text"], chunk_id=row["chunk_id"])


class ChunkStore:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection per store object; serving threads share it under SQLite's own locking.
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing: a crash or error inside leaves the previous state as it was."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        else:
            self.db.execute("COMMIT")

    # --- meta ---------------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    @property
    def generation(self) -> int:
        return int(self.get_meta("generation", "0"))

    # --- files and documents ------------------------------------------------------------------
    def file_hashes(self, root: str) -> dict[str, str]:
        rows = self.db.execute("SELECT path, content_hash FROM files WHERE root = ?", (root,))
        return {r["path"]: r["content_hash"] for r in rows}

    def doc_owner(self, doc_id: str) -> tuple[str, str] | None:
        row = self.db.execute("SELECT root, path FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
        return (row["root"], row["path"]) if row else None

    def remove_file(self, root: str, path: str) -> list[int]:
        """Delete a file with its documents and chunks; returns the FAISS ids that went away."""
        doc_ids = [r["doc_id"] for r in self.db.execute(
            "SELECT doc_id FROM documents WHERE root = ? AND path = ?", (root, path))]
        gone: list[int] = []
        for doc_id in doc_ids:
            gone += [r["faiss_id"] for r in self.db.execute("SELECT faiss_id FROM chunks WHERE doc_id = ?", (doc_id,))]
            self.db.execute("DELETE FROM chunks WHERE doc_id = ?", (doc_id,))
        self.db.execute("DELETE FROM documents WHERE root = ? AND path = ?", (root, path))
        self.db.execute("DELETE FROM files WHERE root = ? AND path = ?", (root, path))
        return gone

    def same_chunks(self, root: str, path: str, docs: list[Document], chunks: list[Chunk]) -> bool:
        """Does the stored file hold exactly these documents and chunks (ids are content hashes): a change of its
        metadata alone?"""
        stored_docs = {r["doc_id"] for r in self.db.execute(
            "SELECT doc_id FROM documents WHERE root = ? AND path = ?", (root, path))}
        if not stored_docs or stored_docs != {d.doc_id for d in docs}:
            return False
        stored_chunks = {r["chunk_id"] for r in self.db.execute(
            "SELECT c.chunk_id FROM chunks c JOIN documents d USING (doc_id) WHERE d.root = ? AND d.path = ?",
            (root, path))}
        return stored_chunks == {c.chunk_id for c in chunks}

    def replace_metadata(self, root: str, path: str, content_hash: str, docs: list[Document]) -> None:
        """A metadata-only change (``same_chunks``): the file's hash and its documents' titles and metadata, chunks
        and vectors untouched."""
        self.db.execute("UPDATE files SET content_hash = ? WHERE root = ? AND path = ?", (content_hash, root, path))
        self.db.executemany("UPDATE documents SET source = ?, title = ?, metadata = ? WHERE doc_id = ?",
                            [(d.source, d.title, json.dumps(d.metadata), d.doc_id) for d in docs])

    def add_file(self, root: str, path: str, content_hash: str, docs: list[Document],
                 chunks: list[Chunk], vectors: np.ndarray) -> None:
        assert len(chunks) == len(vectors)
        self.db.execute("INSERT INTO files (root, path, content_hash) VALUES (?, ?, ?)", (root, path, content_hash))
        self.db.executemany(
            "INSERT INTO documents (doc_id, root, path, source, title, metadata) VALUES (?, ?, ?, ?, ?, ?)",
            [(d.doc_id, root, path, d.source, d.title, json.dumps(d.metadata)) for d in docs])
        self.db.executemany(
            "INSERT OR REPLACE INTO chunks (chunk_id, faiss_id, doc_id, source, title, heading, position, text, vector)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(c.chunk_id, c.faiss_id, c.doc_id, c.source, c.title, c.heading, c.position, c.text,
              np.asarray(v, dtype=np.float32).tobytes()) for c, v in zip(chunks, vectors)])

    def update_vectors(self, chunk_ids: list[str], vectors: np.ndarray) -> None:
        self.db.executemany("UPDATE chunks SET vector = ? WHERE chunk_id = ?",
                            [(np.asarray(v, dtype=np.float32).tobytes(), cid) for cid, v in zip(chunk_ids, vectors)])

    def distilled_ids(self) -> set[str]:
        return {r["chunk_id"] for r in self.db.execute("SELECT chunk_id FROM distilled")}

    def set_distilled(self, chunk_ids: list[str]) -> None:
        self.db.execute("DELETE FROM distilled")
        self.db.executemany("INSERT OR IGNORE INTO distilled (chunk_id) VALUES (?)", [(c,) for c in chunk_ids])

    # --- chunks -------------------------------------------------------------------------------
    def vectors_for(self, chunk_ids: list[str]) -> dict[str, np.ndarray]:
        """Stored vectors of chunks already embedded (unchanged passages are never re-encoded)."""
        found = {}
        for start in range(0, len(chunk_ids), 500):
            batch = chunk_ids[start:start + 500]
            marks = ",".join("?" * len(batch))
            for r in self.db.execute(f"SELECT chunk_id, vector FROM chunks WHERE chunk_id IN ({marks})", batch):
                found[r["chunk_id"]] = np.frombuffer(r["vector"], dtype=np.float32)
        return found

    def chunks_by_faiss_ids(self, faiss_ids: list[int]) -> dict[int, Chunk]:
        if not faiss_ids:
            return {}
        marks = ",".join("?" * len(faiss_ids))
        rows = self.db.execute(f"SELECT * FROM chunks WHERE faiss_id IN ({marks})", [int(i) for i in faiss_ids])
        return {r["faiss_id"]: _row_to_chunk(r) for r in rows}

    def all_chunks(self) -> list[Chunk]:
        return [_row_to_chunk(r) for r in self.db.execute("SELECT * FROM chunks ORDER BY faiss_id")]

    def all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(faiss ids (N,), vectors (N, D)) of every chunk, for rebuilding the index."""
        rows = self.db.execute("SELECT faiss_id, vector FROM chunks ORDER BY faiss_id").fetchall()
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        ids = np.array([r["faiss_id"] for r in rows], dtype=np.int64)
        return ids, np.stack([np.frombuffer(r["vector"], dtype=np.float32) for r in rows])

    def documents(self) -> list[dict]:
        rows = self.db.execute(
            "SELECT d.doc_id, d.root, d.path, d.source, d.title, d.metadata, COUNT(c.chunk_id) AS chunks "
            "FROM documents d LEFT JOIN chunks c USING (doc_id) GROUP BY d.doc_id ORDER BY d.source, d.doc_id")
        return [{**dict(r), "metadata": json.loads(r["metadata"])} for r in rows]

    def document(self, doc_id: str) -> dict | None:
        row = self.db.execute("SELECT doc_id, root, path, source, title, metadata FROM documents WHERE doc_id = ?",
                              (doc_id,)).fetchone()
        if row is None:
            return None
        chunks = self.db.execute("SELECT chunk_id, heading, position, text FROM chunks WHERE doc_id = ? "
                                 "ORDER BY position", (doc_id,))
        return {**dict(row), "metadata": json.loads(row["metadata"]), "chunks": [dict(c) for c in chunks]}

    def faiss_ids_where(self, keep) -> np.ndarray:
        """Sorted FAISS ids of every chunk whose document's metadata satisfies ``keep`` (a predicate on a dict)."""
        docs = [r["doc_id"] for r in self.db.execute("SELECT doc_id, metadata FROM documents")
                if keep(json.loads(r["metadata"]))]
        ids: list[int] = []
        for start in range(0, len(docs), 500):
            batch = docs[start:start + 500]
            marks = ",".join("?" * len(batch))
            ids += [r[0] for r in self.db.execute(f"SELECT faiss_id FROM chunks WHERE doc_id IN ({marks})", batch)]
        return np.sort(np.array(ids, dtype=np.int64))

    def hits_by_faiss_ids(self, faiss_ids: list[int]) -> tuple[dict[int, Chunk], dict[str, dict]]:
        """(chunks by FAISS id, their documents' metadata by doc id) in one query: what a search returns."""
        if not faiss_ids:
            return {}, {}
        marks = ",".join("?" * len(faiss_ids))
        rows = self.db.execute(f"SELECT c.*, d.metadata FROM chunks c JOIN documents d USING (doc_id) "
                               f"WHERE c.faiss_id IN ({marks})", [int(i) for i in faiss_ids]).fetchall()
        return {r["faiss_id"]: _row_to_chunk(r) for r in rows}, {r["doc_id"]: json.loads(r["metadata"]) for r in rows}

    def languages(self) -> dict[str, int]:
        """Documents by their "language" field (ingest/language.py sets it at ingest; "en" where it is missing)."""
        rows = self.db.execute("SELECT COALESCE(json_extract(metadata, '$.language'), 'en'), COUNT(*) FROM documents "
                               "GROUP BY 1").fetchall()
        counts = Counter()
        for language, count in rows:   # a declared "de-AT" counts as "de", the code questions are detected in
            counts[language_code(str(language)) or ENGLISH] += count
        return dict(counts.most_common())

    def document_languages(self) -> dict[str, str]:
        """Each document's language (its "language" field; "en" where it is missing), by document id."""
        rows = self.db.execute("SELECT doc_id, COALESCE(json_extract(metadata, '$.language'), 'en') FROM documents")
        return {doc_id: language_code(str(language)) or ENGLISH for doc_id, language in rows}

    def counts(self) -> dict[str, int]:
        return {table: self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("files", "documents", "chunks")}
