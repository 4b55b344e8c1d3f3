"""A collection: its document store plus the FAISS and BM25 indexes derived from it, wired from small parts.

- ``ingest.pipeline.plan_ingest`` reads files into chunks and diffs them against the store;
- ``CollectionEncoder`` knows which encoder serves the collection (the default or a promoted one);
- ``IndexGenerations`` keeps one FAISS file and one BM25 state per committed generation;
- ``SearchSnapshot`` searches one consistent (encoder, index, BM25) triple.

Write path (``ingest``, ``remove_file``, ``promote``): one SQLite transaction holds every change; before it
commits, the next generation's FAISS index and BM25 state are written aside (both updated with the change only,
not rebuilt, unless the change re-embeds everything or switches the FAISS index type). A crash before the commit
leaves the store and the old generation's index untouched; readers always open the index named by the committed
generation.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from filelock import FileLock, Timeout

from ingest.chunker import Chunker
from ingest.path_metadata import PathRule
from ingest.pipeline import IngestPlan, IngestReport, plan_ingest
from ingest.store import ChunkStore
from ingest.language import ENGLISH, from_metadata, question_language
from retrieval.answering.cosine_scale import COLLECTION_SCALE_META, CosineScale
from retrieval.collection_encoder import MODEL_META, CollectionEncoder, EncoderMismatch
from retrieval.encoder import TextEncoder
from retrieval.filters import canonical, compile_filter
from retrieval.fusion import EQUAL_WEIGHT, FUSION_META, fusion_record, stored_dense_weight
from retrieval.home import CREATED_META, UnknownCollection
from retrieval.index_generations import IndexGenerations
from retrieval.models import MULTILINGUAL
from retrieval.search import DEFAULT_MODE, SearchHit, SearchSnapshot, SnapshotMoved
from retrieval.vector_index import EXACT_LIMIT, VectorIndex

__all__ = ["Collection", "CollectionBusy", "EncoderMismatch", "IngestReport", "SearchHit"]
WRITE_LOCK = "write.lock"
PATH_RULE_META = "path_metadata"   # the collection's folder rule (ingest/path_metadata.py)
CUSTOMER_RULES_META = "customer_rules"   # customer field -> metadata field and use (serve/customer.py)
QUESTION_LANGUAGES_META = "question_languages"   # languages the customers ask in, set by `kbqa distill --languages`
ALLOWED_CACHE = 64   # filters whose kept ids are remembered per collection (a key's slice is asked again and again)
log = logging.getLogger(__name__)


class CollectionBusy(TimeoutError):
    """Another writer (an upload, a CLI ingest, a promotion) held the collection for longer than the caller waits."""


class Collection:
    def __init__(self, directory: Path, encoder: TextEncoder, create: bool = False,
                 exact_limit: int = EXACT_LIMIT, encoder_loader: Callable[[Path], TextEncoder] | None = None,
                 vector_store: Callable[..., IndexGenerations] = IndexGenerations,
                 named_encoder: Callable[[str], TextEncoder] | None = None):
        """``vector_store``: where the vectors of each generation live, built as (folder, store, exact_limit):
        FAISS files (IndexGenerations) or Milvus (retrieval.milvus_store.MilvusGenerations). ``named_encoder``: a
        shipped encoder by its model name (the multilingual one, for documents that are not English); without it
        every collection keeps ``encoder``."""
        self.directory = Path(directory)
        self.name = self.directory.name
        if not (self.directory / "store.sqlite").exists() and not create:
            raise UnknownCollection(f"collection {self.name!r} does not exist: ingest documents into it first")
        self.store = ChunkStore(self.directory / "store.sqlite")
        self.encoders = CollectionEncoder(self.directory, self.store, encoder, encoder_loader, named_encoder)
        self.generations = vector_store(self.directory, self.store, exact_limit)
        self._lock = threading.RLock()
        # One writer at a time per collection, across threads and processes (flock on a file in its folder): the
        # later writer waits, then plans against what the first committed, so a document id both claim is that
        # file's reported error, never a failed commit. Collections never wait for each other.
        self._write_lock = FileLock(self.directory / WRITE_LOCK)
        self._generation = -1
        self._snapshot: SearchSnapshot | None = None
        self._fusion: tuple[str | None, str, float] = (None, "", EQUAL_WEIGHT)   # (record, encoder id, weight)
        self._allowed_cache: OrderedDict = OrderedDict()   # (generation, filter) -> FAISS ids it keeps
        self._languages: tuple[int, dict[str, int]] = (-1, {})   # (generation, documents by language)
        self._cosine_scale: tuple = (None, None)   # ((stored map, encoder id), its CosineScale or None)
        self._closed = False

    def close(self) -> None:
        """Close the store; searches still running on this object end with UnknownCollection, not a crash."""
        with self._lock:
            self._closed = True
            self.store.close()

    def _gone(self) -> UnknownCollection:
        return UnknownCollection(f"collection {self.name!r} was deleted")

    @property
    def encoder(self) -> TextEncoder:
        return self.encoders.current

    @property
    def encoder_dir(self) -> Path | None:
        return self.encoders.encoder_dir

    @property
    def encoder_model(self) -> str | None:
        """The shipped model serving the collection when not the default (MULTILINGUAL); None for the default or a
        distilled encoder. As of the committed generation: a refresh reads one row unless another commit landed."""
        with self._lock:
            self.refresh()
            return self.encoders.model_name

    # --- reading --------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Reload the indexes if another process (or this one) committed a newer generation."""
        with self._lock:
            generation = self.store.generation
            if generation == self._generation:
                return
            encoder = self.encoders.adopt_stored()
            self.encoders.check(self.name)
            index = self.generations.open(generation, encoder.dim)
            bm25 = self.generations.open_bm25(generation)
            self._snapshot = SearchSnapshot(encoder, index, bm25)
            self._generation = generation

    def snapshot(self) -> SearchSnapshot:
        with self._lock:
            if self._closed:
                raise self._gone()
            self.refresh()
            weight = self.dense_weight
            return self._snapshot if weight == self._snapshot.dense_weight else dataclasses.replace(
                self._snapshot, dense_weight=weight)

    @property
    def dense_weight(self) -> float:
        """The hybrid fusion weight fitted for the serving encoder (read each time: another process may fit it)."""
        with self._lock:
            record, encoder_id = self.store.get_meta(FUSION_META), self.encoder.encoder_id
            if self._fusion[:2] != (record, encoder_id):
                self._fusion = (record, encoder_id, stored_dense_weight(record, encoder_id))
            return self._fusion[2]

    def mark_created(self) -> None:
        """Listed although empty (a collection made by POST /v1/collections); an ingest's first commit lists it too,
        so one killed before it never leaves an empty collection behind."""
        with self.store.transaction():
            self.store.set_meta(CREATED_META, "1")

    def set_dense_weight(self, weight: float, **fitted) -> None:
        """Serve hybrid search with this dense weight, for the serving encoder only; ``fitted``: how it was chosen."""
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"dense weight {weight} is not in [0, 1]")
        with self._lock, self.store.transaction():
            self.store.set_meta(FUSION_META, fusion_record(weight, self.encoder.encoder_id, **fitted))

    @property
    def customer_rules(self) -> dict:
        """How a customer's context scopes this collection's searches (serve/customer.py checks them); read each
        time, as the fusion weight, so a server sees a CLI change at once."""
        return json.loads(self.store.get_meta(CUSTOMER_RULES_META) or "{}")

    def set_customer_rules(self, rules: dict) -> None:
        with self._lock, self.store.transaction():
            self.store.set_meta(CUSTOMER_RULES_META, json.dumps(rules, sort_keys=True))

    @property
    def question_languages(self) -> list[str]:
        """The languages the collection's customers ask in, which distillation translates the teacher's questions
        into (distill/teacher_translations.py): as set, else its documents' languages."""
        stored = self.store.get_meta(QUESTION_LANGUAGES_META)
        return json.loads(stored) if stored else list(self.languages())

    def set_question_languages(self, languages: list[str]) -> None:
        with self._lock, self.store.transaction():
            self.store.set_meta(QUESTION_LANGUAGES_META, json.dumps(list(languages)))

    @property
    def index(self) -> VectorIndex:
        return self.snapshot().index

    def stats(self) -> dict:
        index = self.snapshot().index
        return {"collection": self.name, **self.store.counts(), "generation": self._generation,
                "index": index.kind, "index_on_gpu": index.on_gpu, "encoder": self.store.get_meta("encoder"),
                "languages": self.languages(), "question_languages": self.question_languages,
                "hybrid_dense_weight": self.dense_weight}

    def languages(self) -> dict[str, int]:
        """Documents by language, most first; counted once per committed generation."""
        with self._lock:
            generation = self.store.generation
            if self._languages[0] != generation:
                self._languages = (generation, self.store.languages())
            return self._languages[1]

    def cosine_scale(self) -> CosineScale | None:
        """The serving encoder's cosines onto the shipped multilingual encoder's scale, when it is one distilled from
        it (retrieval/answering/cosine_scale.py); None otherwise."""
        stored = self.store.get_meta(COLLECTION_SCALE_META)
        if not stored:
            return None
        key = (stored, self.encoder.encoder_id)
        if self._cosine_scale[0] != key:   # parsed once per stored map and encoder, not at every answer
            spec = json.loads(stored)
            self._cosine_scale = (key, CosineScale.from_dict(spec["scale"])
                                  if spec.get("encoder") == self.encoder.encoder_id else None)
        return self._cosine_scale[1]

    def question_language(self, question: str) -> str:
        """The question's language; short or unsure: the collection's main one. An all-English collection on an
        English encoder does not run the detector (its questions analyse and rank exactly as before languages were
        read)."""
        languages = self.languages()
        if set(languages) <= {ENGLISH} and self.encoder_model != MULTILINGUAL:
            return ENGLISH
        return question_language(question, next(iter(languages)))

    def allowed(self, filter_: dict) -> np.ndarray:
        """Sorted FAISS ids of the chunks whose documents ``filter_`` keeps (retrieval/filters.py), cached per
        committed generation: a commit (metadata included) changes the generation."""
        key = (self.store.generation, canonical(filter_))
        with self._lock:
            if key in self._allowed_cache:
                self._allowed_cache.move_to_end(key)
                return self._allowed_cache[key]
        ids = self.store.faiss_ids_where(compile_filter(filter_))
        with self._lock:
            self._allowed_cache[key] = ids
            while len(self._allowed_cache) > ALLOWED_CACHE:
                self._allowed_cache.popitem(last=False)
        return ids

    def search(self, query: str, k: int = 5, mode: str = DEFAULT_MODE, filter: dict | None = None) -> list[SearchHit]:
        """Search the committed generation; if a commit lands mid-search and removes ranked chunks, search again
        on the new one (twice at most), so a concurrent ingest never silently shortens the results. ``filter``: a
        metadata filter (retrieval/filters.py; FilterError when malformed, from ``allowed``); the ranking is exact
        within it."""
        try:
            language = self.question_language(query)
            if mode == "hybrid" and self.encoder_model == MULTILINGUAL and language not in self.languages():
                # BM25 matches little across languages (Spanish questions, English docs: hybrid 0.53 nDCG@10, dense
                # alone 0.65, benchs/results/multilingual_retrieval.md): the multilingual encoder ranks alone.
                mode = "dense"
            for strict in (True, True, False):
                try:
                    snapshot = self.snapshot()
                    allowed = self.allowed(filter) if filter else None
                    return snapshot.search(query, k, mode, self.store, self._lock, strict=strict, allowed=allowed,
                                           language=language)
                except SnapshotMoved:
                    continue
        except sqlite3.ProgrammingError:   # "Cannot operate on a closed database": deleted mid-search
            if self._closed:
                raise self._gone() from None
            raise

    # --- writing --------------------------------------------------------------------------------
    @contextmanager
    def writing(self, wait_s: float | None = None) -> Iterator[None]:
        """Hold this collection's write lock (re-entrant in one thread); ``wait_s``: how long to wait for another
        writer, None for as long as it takes. Raises CollectionBusy past it."""
        try:
            try:
                self._write_lock.acquire(timeout=0)
            except Timeout:
                log.warning("collection %r: waiting for another writer (upload, ingest or promotion) to finish",
                            self.name)
                self._write_lock.acquire(timeout=-1 if wait_s is None else wait_s)
        except Timeout:
            raise CollectionBusy(f"collection {self.name!r} is being written by another upload, ingest or "
                                 f"distillation; retry later") from None
        try:
            yield
        finally:
            self._write_lock.release()

    def ingest(self, path: Path, chunker: Chunker, show_progress: bool = False,
               files: dict[str, Path] | None = None, wait_s: float | None = None, load=None,
               metadata: dict[str, dict] | None = None, path_rule: str | None = None) -> IngestReport:
        """Bring the collection in line with ``path`` (a folder or one file), incrementally; with ``files`` (name
        relative to the folder ``path`` -> where its bytes are now), those files only, and nothing is removed.
        ``load``: how a file is read, ``metadata``: fields by file name (ingest.pipeline.plan_ingest); ``wait_s``: for
        another writer (None: as long as it takes). ``path_rule``: the collection's folder rule from now on
        (ingest/path_metadata.py; "" drops it); None keeps the stored one."""
        with self.writing(wait_s):
            start = time.perf_counter()
            with self._lock:
                encoder = self.encoders.adopt_stored()
            if path_rule is not None:
                if path_rule:
                    PathRule(path_rule)   # a malformed rule fails before anything is stored
                with self.store.transaction():
                    self.store.set_meta(PATH_RULE_META, path_rule)
            stored_rule = self.store.get_meta(PATH_RULE_META) or ""
            plan = plan_ingest(path, self.store, chunker, self.name, show_progress, files=files, metadata=metadata,
                               path_rule=PathRule(stored_rule) if stored_rule and files is None else None,
                               **({"load": load} if load is not None else {}))
            languages = {from_metadata(doc.metadata) or ENGLISH for update in plan.updates for doc in update.docs}
            with self._lock:
                if self.encoders.fit_languages(languages):
                    encoder = self.encoders.current
                    log.info("collection %r: documents in %s, served by the multilingual encoder from now on",
                             self.name, ", ".join(sorted(languages)))
            reembed_all = self.encoders.stale()
            # Embed only chunks never embedded before by this encoder.
            new_chunks = plan.new_chunks
            vectors = {} if reembed_all else self.store.vectors_for(list(new_chunks))
            todo = [c for cid, c in new_chunks.items() if cid not in vectors]
            if todo:
                encoded = encoder.encode([c.embedding_text() for c in todo], show_progress=show_progress)
                vectors.update({c.chunk_id: v for c, v in zip(todo, encoded)})
            plan.report.chunks_embedded = len(todo)
            if plan.updates or plan.removed or reembed_all:
                self._commit(plan, vectors, reembed_all, show_progress)
            plan.report.chunks_total = self.store.counts()["chunks"]
            plan.report.seconds = round(time.perf_counter() - start, 3)
            return plan.report

    def _commit(self, plan: IngestPlan, vectors: dict, reembed_all: bool, show_progress: bool = False) -> None:
        encoder = self.encoder
        with self._lock, self.store.transaction():
            old_generation = self.store.generation
            current, bm25 = None, None
            if old_generation > 0 and not reembed_all:
                served = self.snapshot()
                current, bm25 = served.index, served.bm25
            elif old_generation > 0:   # a new encoder: the old snapshot no longer opens, its texts' BM25 does
                bm25 = self.generations.open_bm25(old_generation)
            removed_ids: list[int] = []
            for rel in plan.removed:
                removed_ids += self.store.remove_file(plan.root_key, rel)
            added_ids, added_vectors, added_texts, added_languages = [], [], [], []
            for update in plan.updates:
                if self.store.same_chunks(plan.root_key, update.rel, update.docs, update.chunks):
                    # metadata alone changed: the store's rows change, the indexes keep every vector and term
                    self.store.replace_metadata(plan.root_key, update.rel, update.digest, update.docs)
                    continue
                removed_ids += self.store.remove_file(plan.root_key, update.rel)
                rows = (np.stack([vectors[c.chunk_id] for c in update.chunks]) if update.chunks
                        else np.zeros((0, encoder.dim)))
                self.store.add_file(plan.root_key, update.rel, update.digest, update.docs, update.chunks, rows)
                added_ids += [c.faiss_id for c in update.chunks]
                added_texts += [c.embedding_text() for c in update.chunks]
                language_of = {doc.doc_id: from_metadata(doc.metadata) or ENGLISH for doc in update.docs}
                added_languages += [language_of.get(c.doc_id, ENGLISH) for c in update.chunks]
                added_vectors.append(rows)
            if reembed_all:  # every other stored vector comes from the old encoder: replace them all
                stale = [c for c in self.store.all_chunks() if c.chunk_id not in vectors]
                fresh = encoder.encode([c.embedding_text() for c in stale], show_progress=show_progress)
                self.store.update_vectors([c.chunk_id for c in stale], fresh)
            self.store.set_meta("encoder", encoder.encoder_id)
            if self.encoders.model_name:
                self.store.set_meta(MODEL_META, self.encoders.model_name)
            generation = old_generation + 1
            self.store.set_meta("generation", str(generation))
            index = self.generations.commit(generation, encoder.dim, current, removed_ids, added_ids, added_vectors)
            # BM25 gets the change only: the added chunks are tokenised, the removed marked dead (retrieval/bm25.py).
            bm25 = (bm25.updated(removed_ids, added_ids, added_texts, added_languages) if bm25 is not None
                    else self.generations.build_bm25())
            self.generations.save_bm25(bm25, generation)
        # Warmed before it is served: at 1M chunks the first query after a commit paid 150-360 ms for it.
        self._published(generation, SearchSnapshot(encoder, index, bm25.warm()) if index is not None else None)

    def _published(self, generation: int, committed: SearchSnapshot | None = None) -> None:
        """After a commit: drop older index files and serve what was committed: ``committed`` (the indexes the
        commit wrote, still in memory: at 1M chunks reading the index back took seconds), else reloaded."""
        self.generations.prune(keep=generation)
        with self._lock:
            if committed is not None and self.store.generation == generation:
                self._snapshot, self._generation = committed, generation
                return
            self._generation = -1
            self.refresh()

    def use_shipped_encoder(self, name: str, show_progress: bool = False) -> bool:
        """Serve with the shipped encoder ``name`` (retrieval/models.py) from now on: MULTILINGUAL for documents in
        English asked in other languages too. Re-embeds every chunk in one commit; the choice is kept by the store.
        False when it already serves."""
        with self.writing():
            with self._lock:
                self.encoders.adopt_stored()
                if self.encoders.model_name == name:
                    return False
                if self.store.get_meta("encoder_dir"):
                    raise ValueError(f"collection {self.name!r} serves its own distilled encoder: a shipped one "
                                     f"would discard it")
                self.encoders.choose(name)
            if self.store.generation == 0:   # nothing embedded yet: the first ingest embeds with it
                with self.store.transaction():
                    self.store.set_meta(MODEL_META, name)
                return True
            self._commit(IngestPlan("", [], [], IngestReport(self.name)), {}, reembed_all=True,
                         show_progress=show_progress)
            return True

    def remove_file(self, root_key: str, rel: str) -> None:
        """Drop one ingested file (all its documents) from the store and the index, in one transaction."""
        with self.writing():
            if rel not in self.store.file_hashes(root_key):
                raise KeyError(f"{rel} is not in collection {self.name!r}")
            self._commit(IngestPlan(root_key, [], [rel], IngestReport(self.name)), {}, reembed_all=False)

    def promote(self, encoder: TextEncoder, encoder_dir: Path, vectors: dict[str, np.ndarray],
                trained_on: list[str] | None = None, show_progress: bool = False, meta: dict | None = None) -> int:
        """Serve this collection with ``encoder`` from now on: re-embedded, swapped in one transaction.

        ``vectors`` holds the new encoder's vectors by chunk id (computed beforehand, outside the
        write lock); chunks added since are encoded here; ``meta``: store meta written in the same commit (what
        belongs to the new encoder). Returns the new generation.
        """
        rel = Path(encoder_dir).resolve().relative_to(self.directory.resolve()).as_posix()
        with self.writing(), self._lock:
            with self.store.transaction():
                bm25 = self.snapshot().bm25 if self.store.generation > 0 else None   # texts unchanged: same BM25
                chunks = self.store.all_chunks()
                missing = [c for c in chunks if c.chunk_id not in vectors]
                if missing:
                    fresh = encoder.encode([c.embedding_text() for c in missing], show_progress=show_progress)
                    vectors = {**vectors, **{c.chunk_id: v for c, v in zip(missing, fresh)}}
                self.store.update_vectors([c.chunk_id for c in chunks], [vectors[c.chunk_id] for c in chunks])
                self.store.set_meta("encoder", encoder.encoder_id)
                self.store.set_meta("encoder_dir", rel)
                for key, value in (meta or {}).items():
                    self.store.set_meta(key, value)
                if trained_on is not None:
                    self.store.set_distilled(trained_on)
                generation = self.store.generation + 1
                self.store.set_meta("generation", str(generation))
                self.generations.commit(generation, encoder.dim, None, [], [], [])
                self.generations.save_bm25(bm25 or self.generations.build_bm25(), generation)
            # Before the lock is let go: a search that refreshes to the committed generation must find this encoder
            # current, not load it from its folder (a race tests/test_churn.py caught: 503 "model folder missing").
            self.encoders.current = encoder
        self._published(generation)
        return generation
