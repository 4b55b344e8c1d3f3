"""A collection: its document store plus the FAISS and BM25 indexes derived from it.

Write path (``ingest``): one SQLite transaction holds every change; before it commits, the new
FAISS index is written aside as ``index-<generation>.faiss``. A crash before the commit leaves
the store and ``index-<old generation>.faiss`` untouched; readers always open the index named
by the committed generation, and rebuild it from the stored vectors if it is missing.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, get_args

import numpy as np
from tqdm.auto import tqdm

from ingest.chunker import Chunker
from ingest.loaders import LoadError, load_file, supported
from ingest.records import Chunk
from ingest.store import ChunkStore
from retrieval.bm25 import BM25Index
from retrieval.encoder import TextEncoder
from retrieval.fusion import reciprocal_rank_fusion
from retrieval.home import UnknownCollection
from retrieval.vector_index import EXACT_LIMIT, VectorIndex

log = logging.getLogger(__name__)

SearchMode = Literal["dense", "bm25", "hybrid"]
SEARCH_MODES: tuple[str, ...] = get_args(SearchMode)
DEFAULT_MODE = "hybrid"  # measured better than dense alone: see README and benchs/retrieval_quality.py


class EncoderMismatch(RuntimeError):
    """The collection's vectors come from another encoder than the one loaded."""


@dataclass
class SearchHit:
    chunk: Chunk
    score: float                     # ranking score: cosine (dense), BM25, or RRF (hybrid)
    dense_score: float | None = None  # cosine between query and passage: the relevance gate uses it


@dataclass
class IngestReport:
    collection: str
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # source -> reason
    chunks_total: int = 0
    chunks_embedded: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _walk(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))


class Collection:
    def __init__(self, directory: Path, encoder: TextEncoder, create: bool = False,
                 exact_limit: int = EXACT_LIMIT, encoder_loader: Callable[[Path], TextEncoder] | None = None):
        self.directory = Path(directory)
        self.name = self.directory.name
        if not (self.directory / "store.sqlite").exists() and not create:
            raise UnknownCollection(f"collection {self.name!r} does not exist: ingest documents into it first")
        self.encoder = encoder  # the default; a distilled encoder promoted into this collection replaces it
        self.encoder_loader = encoder_loader
        self.exact_limit = exact_limit
        self.store = ChunkStore(self.directory / "store.sqlite")
        self._lock = threading.RLock()
        self._generation = -1
        self._index: VectorIndex | None = None
        self._bm25: BM25Index | None = None

    def close(self) -> None:
        self.store.close()

    def _index_path(self, generation: int) -> Path:
        return self.directory / f"index-{generation}.faiss"

    # --- reading --------------------------------------------------------------------------------
    def _adopt_stored_encoder(self) -> None:
        """Load the encoder this collection was (re-)embedded with, when it is a promoted one of its own."""
        stored_id, stored_dir = self.store.get_meta("encoder"), self.store.get_meta("encoder_dir")
        if stored_dir and stored_id != self.encoder.encoder_id and self.encoder_loader is not None:
            encoder = self.encoder_loader(self.directory / stored_dir)
            if encoder.encoder_id != stored_id:
                raise EncoderMismatch(f"{self.directory / stored_dir} is {encoder.encoder_id}, expected {stored_id}")
            self.encoder = encoder

    @property
    def encoder_dir(self) -> Path | None:
        """Folder of the promoted encoder serving this collection; None while the default serves."""
        stored = self.store.get_meta("encoder_dir")
        return self.directory / stored if stored else None

    def _check_encoder(self) -> None:
        stored = self.store.get_meta("encoder")
        if stored is not None and stored != self.encoder.encoder_id:
            raise EncoderMismatch(
                f"collection {self.name!r} was embedded with {stored}, but the loaded encoder is "
                f"{self.encoder.encoder_id}: run `kbqa ingest PATH --collection {self.name}` to re-embed it")

    def _rebuild_index(self) -> VectorIndex:
        ids, vectors = self.store.all_vectors()
        return VectorIndex.build(ids, vectors, self.encoder.dim, self.exact_limit)

    def refresh(self) -> None:
        """Reload the indexes if another process (or this one) committed a newer generation."""
        with self._lock:
            generation = self.store.generation
            if generation == self._generation:
                return
            self._adopt_stored_encoder()
            self._check_encoder()
            path = self._index_path(generation)
            index = None
            if path.exists():
                try:
                    index = VectorIndex.load(path)
                except RuntimeError as exc:  # faiss reports a corrupt file this way
                    log.warning("index %s unreadable (%s); rebuilding from the store", path, exc)
            if index is None or index.size != self.store.counts()["chunks"]:
                index = self._rebuild_index()
                if generation > 0:
                    index.save(path)
            chunks = self.store.all_chunks()
            self._bm25 = BM25Index([c.faiss_id for c in chunks], [c.embedding_text() for c in chunks])
            self._index = index
            self._generation = generation

    @property
    def index(self) -> VectorIndex:
        self.refresh()
        return self._index

    def stats(self) -> dict:
        self.refresh()
        return {"collection": self.name, **self.store.counts(), "generation": self._generation,
                "index": self._index.kind, "index_on_gpu": self._index.on_gpu,
                "encoder": self.store.get_meta("encoder")}

    def search(self, query: str, k: int = 5, mode: str = DEFAULT_MODE) -> list[SearchHit]:
        if mode not in SEARCH_MODES:
            raise ValueError(f"unknown search mode {mode!r}; use one of {SEARCH_MODES}")
        with self._lock:
            self.refresh()
            # One consistent (encoder, index) pair: a promotion swapping both never mixes them.
            encoder, index, bm25 = self.encoder, self._index, self._bm25
        query_vector = encoder.encode([query])  # (1, D)
        depth = k if mode == "dense" else max(4 * k, 40)
        scores, ids = index.search(query_vector, depth)
        dense = {int(i): float(s) for i, s in zip(ids[0], scores[0]) if i >= 0}
        if mode == "dense":
            ranked = sorted(dense.items(), key=lambda item: -item[1])[:k]
        elif mode == "bm25":
            ranked = bm25.search(query, k)
        else:
            fused = reciprocal_rank_fusion([list(dense), [key for key, _ in bm25.search(query, depth)]])
            ranked = fused[:k]
        with self._lock:
            chunks = self.store.chunks_by_faiss_ids([key for key, _ in ranked])
            missing = [chunks[key].chunk_id for key, _ in ranked if key not in dense and key in chunks]
            stored = self.store.vectors_for(missing)
        hits = []
        for key, score in ranked:
            chunk = chunks.get(key)
            if chunk is None:  # a concurrent ingest removed it between the two reads
                continue
            cosine = dense.get(key)
            if cosine is None and chunk.chunk_id in stored:
                cosine = float(stored[chunk.chunk_id] @ query_vector[0])
            hits.append(SearchHit(chunk=chunk, score=float(score), dense_score=cosine))
        return hits

    # --- writing --------------------------------------------------------------------------------
    def ingest(self, path: Path, chunker: Chunker, show_progress: bool = False) -> IngestReport:
        """Bring the collection in line with ``path`` (a folder or one file), incrementally."""
        start = time.perf_counter()
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"nothing to ingest at {path}")
        root = path if path.is_dir() else path.parent
        root_key = str(root.resolve())
        files = _walk(root) if path.is_dir() else [path]
        report = IngestReport(collection=self.name)
        with self._lock:
            self._adopt_stored_encoder()
        known = self.store.file_hashes(root_key)
        reembed_all = self.store.get_meta("encoder") not in (None, self.encoder.encoder_id)

        pending: list[tuple[str, str, list, list[Chunk]]] = []  # (rel, hash, docs, chunks)
        seen: set[str] = set()
        for file in tqdm(files, desc="reading", disable=not show_progress, unit="file"):
            rel = file.relative_to(root).as_posix()
            if not supported(file):
                continue
            seen.add(rel)
            try:
                digest = _file_sha256(file)
                if known.get(rel) == digest:
                    report.unchanged.append(rel)
                    continue
                docs = load_file(file, rel)
                for doc in docs:
                    owner = self.store.doc_owner(doc.doc_id)
                    if owner is not None and owner != (root_key, rel):
                        raise LoadError(rel, f"document id {doc.doc_id!r} already belongs to {owner[1]} in {owner[0]}")
                chunks = list({c.chunk_id: c for d in docs for c in chunker.split(d)}.values())
            except LoadError as exc:
                report.errors[rel] = exc.reason  # the stored version of this file, if any, stays
                continue
            except OSError as exc:
                report.errors[rel] = f"cannot be read ({exc.strerror or exc})"
                continue
            pending.append((rel, digest, docs, chunks))
            (report.changed if rel in known else report.added).append(rel)
        gone_files = sorted(set(known) - seen) if path.is_dir() else []
        report.removed = gone_files

        # Embed only chunks never embedded before by this encoder.
        new_chunks = {c.chunk_id: c for _, _, _, chunks in pending for c in chunks}
        vectors = {} if reembed_all else self.store.vectors_for(list(new_chunks))
        todo = [c for cid, c in new_chunks.items() if cid not in vectors]
        if todo:
            encoded = self.encoder.encode([c.embedding_text() for c in todo], show_progress=show_progress)
            vectors.update({c.chunk_id: v for c, v in zip(todo, encoded)})
        report.chunks_embedded = len(todo)

        if pending or gone_files or reembed_all:
            self._commit(root_key, pending, gone_files, vectors, reembed_all, show_progress)
        report.chunks_total = self.store.counts()["chunks"]
        report.seconds = round(time.perf_counter() - start, 3)
        return report

    def _commit(self, root_key: str, pending: list, gone_files: list[str], vectors: dict, reembed_all: bool,
                show_progress: bool = False) -> None:
        with self._lock, self.store.transaction():
            old_generation = self.store.generation
            current = None
            if not reembed_all and old_generation > 0:
                self.refresh()
                current = self._index
            removed_ids: list[int] = []
            for rel in gone_files:
                removed_ids += self.store.remove_file(root_key, rel)
            added_ids, added_vectors = [], []
            for rel, digest, docs, chunks in pending:
                removed_ids += self.store.remove_file(root_key, rel)
                rows = np.stack([vectors[c.chunk_id] for c in chunks]) if chunks else np.zeros((0, self.encoder.dim))
                self.store.add_file(root_key, rel, digest, docs, chunks, rows)
                added_ids += [c.faiss_id for c in chunks]
                added_vectors.append(rows)
            if reembed_all:  # every other stored vector comes from the old encoder: replace them all
                stale = [c for c in self.store.all_chunks() if c.chunk_id not in vectors]
                fresh = self.encoder.encode([c.embedding_text() for c in stale], show_progress=show_progress)
                self.store.update_vectors([c.chunk_id for c in stale], fresh)
            self.store.set_meta("encoder", self.encoder.encoder_id)
            generation = old_generation + 1
            self.store.set_meta("generation", str(generation))
            total = self.store.counts()["chunks"]
            wants_exact = total < self.exact_limit
            if current is None or wants_exact != (current.kind == "flat"):
                index = self._rebuild_index()
            else:
                index = current
                index.remove(np.array(removed_ids, dtype=np.int64))
                if added_ids:
                    index.add(np.array(added_ids, dtype=np.int64), np.concatenate(added_vectors))
            index.save(self._index_path(generation))
        for stale in self.directory.glob("index-*.faiss"):
            if stale.name != self._index_path(generation).name:
                stale.unlink(missing_ok=True)
        self._generation = -1  # reload the indexes (and BM25) from what was committed
        self.refresh()

    def remove_file(self, root_key: str, rel: str) -> None:
        """Drop one ingested file (all its documents) from the store and the index, in one transaction."""
        if rel not in self.store.file_hashes(root_key):
            raise KeyError(f"{rel} is not in collection {self.name!r}")
        self._commit(root_key, [], [rel], {}, reembed_all=False)

    def promote(self, encoder: TextEncoder, encoder_dir: Path, vectors: dict[str, np.ndarray],
                trained_on: list[str] | None = None, show_progress: bool = False) -> int:
        """Serve this collection with ``encoder`` from now on: re-embedded, swapped in one transaction.

        ``vectors`` holds the new encoder's vectors by chunk id (computed beforehand, outside the
        write lock); chunks added since are encoded here. Returns the new generation.
        """
        rel = Path(encoder_dir).resolve().relative_to(self.directory.resolve()).as_posix()
        with self._lock, self.store.transaction():
            chunks = self.store.all_chunks()
            missing = [c for c in chunks if c.chunk_id not in vectors]
            if missing:
                fresh = encoder.encode([c.embedding_text() for c in missing], show_progress=show_progress)
                vectors = {**vectors, **{c.chunk_id: v for c, v in zip(missing, fresh)}}
            self.store.update_vectors([c.chunk_id for c in chunks], [vectors[c.chunk_id] for c in chunks])
            self.store.set_meta("encoder", encoder.encoder_id)
            self.store.set_meta("encoder_dir", rel)
            if trained_on is not None:
                self.store.set_distilled(trained_on)
            generation = self.store.generation + 1
            self.store.set_meta("generation", str(generation))
            ids, rows = self.store.all_vectors()
            VectorIndex.build(ids, rows, encoder.dim, self.exact_limit).save(self._index_path(generation))
        for stale in self.directory.glob("index-*.faiss"):
            if stale.name != self._index_path(generation).name:
                stale.unlink(missing_ok=True)
        with self._lock:
            self.encoder = encoder
            self._generation = -1
            self.refresh()
        return generation
