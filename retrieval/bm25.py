"""BM25 over chunk texts that is saved with each generation and updated with each commit, never rebuilt on open.

bm25s tokenises (each language's stop words and Snowball stemmer; English where a text has no language) and
defines the scoring (its default "lucene" variant: idf = ln(1 + (N - df + 0.5) / (df + 0.5)), tf part = tf / (tf +
k1 (1 - b + b dl / avgdl))); bm25s bakes idf and avgdl into its index, so one added chunk would mean re-indexing the
whole corpus. Here the index keeps raw term counts instead, in two segments, and scores at query time:

- ``main``: term-major counts (CSC) of most chunks, written once into its own folder and memory-mapped; chunks
  removed from it are marked dead (and their document frequencies subtracted), not rewritten;
- ``delta``: the chunks added since ``main`` was written, small, rewritten at each commit.

A commit tokenises only the added chunks. When the delta outgrows ``max(MERGE_MIN, MERGE_SHARE * main)`` the
two merge into a new main (O(corpus), rare). Corpus statistics (N, avgdl, df) are those of the live chunks, so
scores equal a fresh bm25s index over the same chunks (tests/test_bm25.py checks it).
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

# bm25s runs jax.lax.top_k at import when JAX is installed, and JAX then takes 75% of a GPU's memory (measured on an H200):
# a second kbqa process on that GPU died out of memory. BM25 selection is cheap on the CPU; a user's own setting wins.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import bm25s  # noqa: E402
import bm25s.stopwords as stop_lists  # noqa: E402
import Stemmer  # noqa: E402

from ingest.language import ENGLISH  # noqa: E402
from retrieval import model_store  # noqa: E402
from retrieval.filters import members  # noqa: E402

logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every index build at DEBUG
_STEMMER = Stemmer.Stemmer("english")
# Each language is analysed with its own Snowball stemmer (PyStemmer) and stop words (bm25s's lists) where there are
# some: an English stemmer leaves Spanish plurals and verb endings apart ("pantallas" / "pantalla"). Keys are
# ingest/language.py's ISO 639-1 codes; a language with neither is split into words (and CJK pairs) only.
SNOWBALL = {"en": "english", "es": "spanish", "de": "german", "fr": "french", "pt": "portuguese", "it": "italian",
            "nl": "dutch", "sv": "swedish", "da": "danish", "no": "norwegian", "fi": "finnish", "hu": "hungarian",
            "ro": "romanian", "ru": "russian", "tr": "turkish", "el": "greek", "ar": "arabic", "ca": "catalan",
            "id": "indonesian", "pl": "polish", "cs": "czech", "fa": "persian", "hi": "hindi"}
STOP_WORDS = {"es": stop_lists.STOPWORDS_SPANISH, "de": stop_lists.STOPWORDS_GERMAN,
              "fr": stop_lists.STOPWORDS_FRENCH, "pt": stop_lists.STOPWORDS_PORTUGUESE,
              "it": stop_lists.STOPWORDS_ITALIAN, "nl": stop_lists.STOPWORDS_DUTCH,
              "sv": stop_lists.STOPWORDS_SWEDISH, "da": stop_lists.STOPWORDS_DANISH,
              "no": stop_lists.STOPWORDS_NORWEGIAN, "ru": stop_lists.STOPWORDS_RUSSIAN,
              "tr": stop_lists.STOPWORDS_TURKISH, "zh": stop_lists.STOPWORDS_CHINESE,
              "ko": stop_lists.STOPWORDS_KOREAN}
_analysers: dict[str, tuple] = {ENGLISH: ("en", _STEMMER)}
# Saved with each index: one written before texts were analysed per language ("", English rules for every text) is
# rebuilt on open where the collection holds other languages (retrieval/index_generations.py).
ANALYSIS = "per-language-1"
K1, B = 1.5, 0.75            # bm25s's defaults
KEPT_CACHE = 16              # filters whose kept rows are remembered per index
MERGE_MIN, MERGE_SHARE = 20_000, 0.10


# Chinese, Japanese and Korean write no spaces between words: bm25s's word pattern would keep a whole sentence as one
# term. Each run of their characters becomes its overlapping character pairs instead, as Lucene's CJK analyser does
# (no dictionary to ship; pairs match most two-character words). Text without them is analysed as before, exactly.
_CJK_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\uff66-\uff9f]+")


def _pairs(match: re.Match) -> str:
    run = match.group(0)
    return " " + (" ".join(run[i:i + 2] for i in range(len(run) - 1)) if len(run) > 1 else run) + " "


def analysed(text: str) -> str:
    return _CJK_RUN.sub(_pairs, text) if _CJK_RUN.search(text) else text


def analyser(language: str | None) -> tuple:
    """(stop words, stemmer) for bm25s.tokenize in ``language`` (None: English, what every collection used to be)."""
    language = language or ENGLISH
    if language not in _analysers:
        stemmer = Stemmer.Stemmer(SNOWBALL[language]) if language in SNOWBALL else None
        _analysers[language] = (STOP_WORDS.get(language), stemmer)
    return _analysers[language]


def tokenize(texts: list[str], vocab: dict[str, int], languages: list[str] | None = None) -> list[np.ndarray]:
    """Each text's term ids (``vocab`` grows with new terms): bm25s's tokeniser, ids made global. ``languages``:
    each text's (None: all English). Texts are tokenised a language at a time; all-English input in one call, in
    the order it always was, so an English collection's terms and ids do not change."""
    if not texts:
        return []
    languages = languages or [ENGLISH] * len(texts)
    result: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(texts)
    for language in dict.fromkeys(languages):
        at = [i for i, lang in enumerate(languages) if lang == language]
        stopwords, stemmer = analyser(language)
        tokens = bm25s.tokenize([analysed(texts[i]) for i in at], stopwords=stopwords, stemmer=stemmer,
                                show_progress=False, allow_empty=False)
        local = np.empty(len(tokens.vocab), dtype=np.int64)
        for term, i in tokens.vocab.items():
            local[i] = vocab.setdefault(term, len(vocab))
        for i, ids in zip(at, tokens.ids):
            if len(ids):
                result[i] = local[np.asarray(ids, dtype=np.int64)]
    return result


@dataclass(frozen=True)
class Segment:
    """Term counts of some chunks: ``counts`` is (chunks x terms) CSC; row i is chunk ``keys[i]``."""
    keys: np.ndarray          # int64 faiss ids
    lengths: np.ndarray       # float32 tokens per chunk (dl)
    counts: sp.csc_matrix     # float32 term frequencies

    @classmethod
    def of(cls, keys, term_ids: list[np.ndarray], n_terms: int) -> "Segment":
        rows = np.repeat(np.arange(len(term_ids)), [len(t) for t in term_ids])
        cols = np.concatenate(term_ids) if term_ids else np.zeros(0, dtype=np.int64)
        counts = sp.csc_matrix((np.ones(len(cols), dtype=np.float32), (rows, cols)),
                               shape=(len(term_ids), n_terms), dtype=np.float32)
        counts.sum_duplicates()
        return cls(np.asarray(keys, dtype=np.int64), np.array([len(t) for t in term_ids], dtype=np.float32), counts)

    @classmethod
    def empty(cls, n_terms: int = 0) -> "Segment":
        return cls.of([], [], n_terms)

    def widened(self, n_terms: int) -> sp.csc_matrix:
        """The counts with columns up to ``n_terms`` (new terms have none here)."""
        c = self.counts
        if c.shape[1] >= n_terms:
            return c
        indptr = np.concatenate([c.indptr, np.full(n_terms - c.shape[1], c.indptr[-1], dtype=c.indptr.dtype)])
        return sp.csc_matrix((c.data, c.indices, indptr), shape=(c.shape[0], n_terms))

    def rows(self, keep: np.ndarray) -> "Segment":
        """Only the rows where ``keep`` is true."""
        return Segment(self.keys[keep], self.lengths[keep], self.counts[np.flatnonzero(keep)].tocsc())

    def doc_freqs(self) -> np.ndarray:
        return np.diff(self.counts.indptr).astype(np.int64)

    def doc_freqs_of(self, rows: np.ndarray) -> np.ndarray:
        """Document frequency per term among the rows where ``rows`` is true: one pass over the postings, no copy
        of them (at 1M chunks they are ~100M entries)."""
        c = self.counts
        hit = np.flatnonzero(rows[c.indices])
        cols = np.searchsorted(c.indptr, hit, side="right") - 1
        return np.bincount(cols, minlength=c.shape[1]).astype(np.int64)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for name, array in (("keys", self.keys), ("lengths", self.lengths), ("data", self.counts.data),
                            ("indices", self.counts.indices), ("indptr", self.counts.indptr)):
            np.save(folder / f"{name}.npy", array)
        (folder / "shape.json").write_text(json.dumps(list(self.counts.shape)))

    @classmethod
    def load(cls, folder: Path) -> "Segment":
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r")
                  for name in ("keys", "lengths", "data", "indices", "indptr")}
        shape = tuple(json.loads((folder / "shape.json").read_text()))
        counts = sp.csc_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=shape, copy=False)
        return cls(np.asarray(arrays["keys"]), np.asarray(arrays["lengths"]), counts)


class BM25Index:
    """Immutable: ``updated`` returns a new index (searches of the old one may still be running)."""

    def __init__(self, terms: list[str], main: Segment, main_id: str, dead: np.ndarray, delta: Segment,
                 dead_df: np.ndarray | None = None, vocab: dict[str, int] | None = None, analysis: str = ANALYSIS):
        """``dead_df``: document frequencies of main's dead rows (kept, so no commit rescans main); ``vocab``: term ->
        id, when the caller already has it (else built from ``terms``); ``analysis``: the text analysis its terms
        came from (``ANALYSIS``)."""
        self.terms, self.analysis = terms, analysis
        self.vocab = vocab if vocab is not None else {t: i for i, t in enumerate(terms)}
        self.main, self.main_id, self.dead, self.delta = main, main_id, dead, delta
        self.dead_df = np.zeros(main.counts.shape[1], dtype=np.int64) if dead_df is None else dead_df
        # Document frequency per term over the live chunks: main's, less its dead rows', plus the delta's.
        df = np.zeros(len(terms), dtype=np.int64)
        for freqs, sign in ((main.doc_freqs(), 1), (delta.doc_freqs(), 1), (self.dead_df, -1)):
            df[:len(freqs)] += sign * freqs
        self._df = df
        self.size = int(len(main.keys) - dead.sum() + len(delta.keys))
        self._length_sum = float(main.lengths.sum() - main.lengths[dead].sum() + delta.lengths.sum())
        # Each row's length normalisation, K1 (1 - B + B dl / avgdl): fixed while this (immutable) index lives.
        avg = self._length_sum / self.size if self.size else 1.0
        self._norms = [(K1 * (1 - B + B * np.asarray(seg.lengths, dtype=np.float32) / avg)).astype(np.float32)
                       for seg in (main, delta)]
        self._saturated: list[np.ndarray | None] = [None, None]
        self._saturating = threading.Lock()   # concurrent first queries compute it once (251 MB at 1M chunks)
        self._dead_rows = np.flatnonzero(dead)
        # Rows a filter keeps, per segment: a key's slice or a product filter is asked again and again. Keyed by the
        # id of the kept-ids array, which the entry holds so the id stays its own while it is cached.
        self._kept: OrderedDict = OrderedDict()
        self._keeping = threading.Lock()

    def _rows_kept(self, s: int, keys: np.ndarray, allowed: np.ndarray) -> np.ndarray:
        with self._keeping:
            entry = self._kept.get((id(allowed), s))
            if entry is not None and entry[0] is allowed:
                return entry[1]
        mask = members(keys, allowed)
        with self._keeping:
            self._kept[(id(allowed), s)] = (allowed, mask)
            while len(self._kept) > KEPT_CACHE:
                self._kept.popitem(last=False)
        return mask

    @classmethod
    def build(cls, keys, texts: list[str], languages: list[str] | None = None) -> "BM25Index":
        vocab: dict[str, int] = {}
        ids = tokenize(list(texts), vocab, languages)
        main = Segment.of(keys, ids, len(vocab))
        return cls(list(vocab), main, uuid.uuid4().hex, np.zeros(len(main.keys), dtype=bool), Segment.empty(len(vocab)),
                   vocab=vocab)

    @property
    def empty(self) -> bool:
        return self.size == 0 or not self.terms

    @property
    def keys(self) -> np.ndarray:
        """Faiss ids of the live chunks."""
        return np.concatenate([self.main.keys[~self.dead], self.delta.keys])

    def updated(self, removed_keys, added_keys, added_texts: list[str],
                added_languages: list[str] | None = None) -> "BM25Index":
        """The index after a commit: ``removed_keys`` gone, ``added_texts`` (tokenised now, each in its language of
        ``added_languages``) in. Merges the delta into a new main when it has grown too large."""
        removed = np.asarray(list(removed_keys), dtype=np.int64)
        newly_dead = np.isin(self.main.keys, removed) & ~self.dead
        dead = self.dead | newly_dead
        dead_df = self.dead_df + self.main.doc_freqs_of(newly_dead) if newly_dead.any() else self.dead_df
        delta = self.delta.rows(~np.isin(self.delta.keys, removed)) if len(self.delta.keys) else self.delta
        vocab = dict(self.vocab)
        added = Segment.of(added_keys, tokenize(list(added_texts), vocab, added_languages), len(vocab))
        terms = self.terms + list(vocab)[len(self.terms):]
        delta = Segment(np.concatenate([delta.keys, added.keys]), np.concatenate([delta.lengths, added.lengths]),
                        sp.vstack([delta.widened(len(terms)), added.counts], format="csc"))
        main_live = int(len(self.main.keys) - dead.sum())
        if len(delta.keys) > max(MERGE_MIN, MERGE_SHARE * main_live) or (dead.sum() > main_live):
            alive = self.main.rows(~dead)
            merged = Segment(np.concatenate([alive.keys, delta.keys]), np.concatenate([alive.lengths, delta.lengths]),
                             sp.vstack([alive.widened(len(terms)), delta.counts], format="csc"))
            return BM25Index(terms, merged, uuid.uuid4().hex, np.zeros(len(merged.keys), dtype=bool),
                             Segment.empty(len(terms)), vocab=vocab, analysis=self.analysis)
        return BM25Index(terms, self.main, self.main_id, dead, delta, dead_df, vocab=vocab, analysis=self.analysis)

    def search(self, query: str, k: int, allowed: np.ndarray | None = None,
               language: str = ENGLISH) -> list[tuple[int, float]]:
        """Up to ``k`` (faiss id, score) pairs with a positive score, best first; ``allowed``: sorted FAISS ids a
        filter keeps (the rest score 0 before ranking, so the top ``k`` are the filtered top ``k``); ``language``:
        the query's, whose stemmer and stop words analyse it."""
        if self.empty or k <= 0 or (allowed is not None and not len(allowed)):
            return []
        stopwords, stemmer = analyser(language)
        words = bm25s.tokenize([analysed(query)], stopwords=stopwords, stemmer=stemmer, return_ids=False,
                               show_progress=False)[0]
        # A repeated query word counts each time, as in bm25s ("screen ... black screen"); unknown words score 0.
        ids = np.array([self.vocab[w] for w in words if w in self.vocab], dtype=np.int64)
        if not len(ids):
            return []
        df = self._df[ids]
        idf = np.log(1 + (self.size - df + 0.5) / (df + 0.5)).astype(np.float32)
        keys, scores = [], []
        for s, (segment, dead) in enumerate(((self.main, self.dead), (self.delta, None))):
            counts = segment.counts
            saturated = self._saturation(s)
            rows, parts = [], []
            for term, weight in zip(ids, idf):
                if term < counts.shape[1] and counts.indptr[term + 1] > counts.indptr[term]:
                    lo, hi = counts.indptr[term], counts.indptr[term + 1]
                    rows.append(counts.indices[lo:hi])
                    parts.append(weight * saturated[lo:hi])
            if not rows:
                continue
            # One pass adds every term's part per row (a per-term fancy += reads and writes the totals each time).
            total = np.bincount(np.concatenate(rows), weights=np.concatenate(parts), minlength=len(segment.keys))
            if dead is not None:
                total[self._dead_rows] = 0.0   # few rows, where filtering the hits would touch every hit
            if allowed is not None:
                total[~self._rows_kept(s, segment.keys, allowed)] = 0.0
            hits = np.flatnonzero(total > 0)
            if len(hits) > k:   # a common term matches most chunks: partition, do not sort them all
                hits = hits[np.argpartition(total[hits], len(hits) - k)[-k:]]
            top = hits[np.lexsort((hits, -total[hits]))]   # best first; equal scores in store order
            keys.append(segment.keys[top])
            scores.append(total[top])
        if not keys:
            return []
        keys, scores = np.concatenate(keys), np.concatenate(scores)
        order = np.argsort(-scores, kind="stable")[:k]
        return [(int(keys[i]), float(scores[i])) for i in order]

    def warm(self) -> "BM25Index":
        """Compute what the first query would (the saturation arrays), e.g. before a commit publishes this index."""
        for s in (0, 1):
            self._saturation(s)
        return self

    def _saturation(self, s: int) -> np.ndarray:
        """Segment ``s``'s tf / (tf + K1 (1 - B + B dl / avgdl)) for every stored (term, chunk) count, in the term-major
        order of its counts: a query then multiplies contiguous slices by idf instead of gathering each chunk's
        length (at 1M chunks the gather was most of a query's time). Computed on first use; fixed for this index."""
        if self._saturated[s] is None:
            with self._saturating:
                if self._saturated[s] is None:
                    counts = (self.main, self.delta)[s].counts
                    tf = np.asarray(counts.data, dtype=np.float32)
                    self._saturated[s] = tf / (tf + self._norms[s][counts.indices])
        return self._saturated[s]

    # --- persistence ------------------------------------------------------------------------------
    def save(self, folder: Path, name: str) -> Path:
        """``folder/main-<id>/`` once per main (generations share it) and ``folder/<name>.npz``: terms, dead rows
        and the delta. Both are written aside and renamed: a crash leaves what was there."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        main_dir = folder / f"main-{self.main_id}"
        if not main_dir.exists():
            staging = folder / f"main-{self.main_id}.tmp{os.getpid()}"
            shutil.rmtree(staging, ignore_errors=True)
            self.main.save(staging)
            os.replace(staging, main_dir)
        path = folder / f"{name}.npz"
        tmp = folder / f"{name}.tmp{os.getpid()}"
        d = self.delta.counts
        terms = np.frombuffer(json.dumps(self.terms).encode(), dtype=np.uint8)  # unicode arrays pad every term
        with open(tmp, "wb") as fh:
            np.savez(fh, main_id=np.array(self.main_id), analysis=np.array(self.analysis), terms=terms, dead=self.dead,
                     dead_df=self.dead_df,
                     keys=self.delta.keys,
                     lengths=self.delta.lengths, data=d.data, indices=d.indices, indptr=d.indptr,
                     shape=np.array(d.shape))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, folder: Path, name: str) -> "BM25Index":
        folder = Path(folder)
        with np.load(folder / f"{name}.npz", allow_pickle=False) as state:
            main_id = str(state["main_id"])
            delta = Segment(state["keys"], state["lengths"],
                            sp.csc_matrix((state["data"], state["indices"], state["indptr"]),
                                          shape=tuple(state["shape"])))
            terms, dead, dead_df = json.loads(state["terms"].tobytes()), state["dead"], state["dead_df"]
            analysis = str(state["analysis"]) if "analysis" in state.files else ""
        return cls(terms, Segment.load(folder / f"main-{main_id}"), main_id, dead, delta, dead_df, analysis=analysis)

    @staticmethod
    def prune(folder: Path, keep: str, pid_alive=model_store.pid_alive) -> None:
        """Delete every state but ``keep``, every main it does not use, and what killed writers left
        (``*.tmp<pid>`` whose process ``pid_alive`` says is gone)."""
        folder = Path(folder)
        if not (folder / f"{keep}.npz").exists():
            return
        with np.load(folder / f"{keep}.npz", allow_pickle=False) as state:
            used = f"main-{state['main_id']}"
        model_store.sweep_dead_writers(folder, "*.tmp*", pid_alive)
        for path in folder.iterdir():
            if ".tmp" in path.name:
                continue   # a live writer's
            if path.name.startswith("main-") and path.name != used:
                shutil.rmtree(path, ignore_errors=True)
            elif path.suffix == ".npz" and path.name != f"{keep}.npz":
                path.unlink(missing_ok=True)
