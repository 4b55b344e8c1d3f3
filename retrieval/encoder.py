"""Sentence encoder: texts in, L2-normalised float32 vectors out.

On a GPU the model runs in float16 (benchs/quality/half_precision.py measures what that changes) and a long encode is a
pipeline: threads tokenise batches ahead (in the tokenizer's Rust core, which releases the GIL; into pinned memory)
while the GPU runs the previous ones, and the vectors come back to the host once at the end, not once a batch.
sentence-transformers' own ``encode`` tokenises and copies in line, so the GPU waited on the host (on an H200: 2,069
passages/s where the float16 forward alone does 31,219).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
import queue
import threading
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from retrieval.e5_port import PROMPTS_FILE
from retrieval.model_store import MANIFEST, verify


class TextEncoder(Protocol):
    encoder_id: str  # vectors from encoders with different ids never share an index
    dim: int

    def encode(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Passages (what is indexed)."""

    def count_tokens(self, text: str) -> int: ...


def encode_queries(encoder, texts: list[str]) -> np.ndarray:
    """Questions as the encoder was trained to read them: e5 wants "query: " where passages carry "passage: "
    (``SentenceEncoder.encode_queries``); an encoder with one way for both encodes them as passages."""
    method = getattr(encoder, "encode_queries", None)
    return method(texts) if method is not None else encoder.encode(texts)


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


PIPELINE_BATCH = 256   # texts a GPU batch; small batches leave it idle between launches
PIPELINE_AHEAD = 4     # batches tokenised ahead of the GPU


class FairLock:
    """A lock taken in arrival order. An ingest encodes slice after slice and, with a plain lock, took it back before
    a waiting thread woke: a one-page upload to another collection (and queries) waited for the whole ingest."""

    def __init__(self):
        self._turns = threading.Condition()
        self._next_ticket = self._serving = 0
        self._abandoned: set[int] = set()   # tickets whose holders stopped waiting (interrupted): skipped

    def __enter__(self) -> "FairLock":
        with self._turns:
            ticket, self._next_ticket = self._next_ticket, self._next_ticket + 1
            try:
                self._turns.wait_for(lambda: self._serving == ticket)
            except BaseException:
                self._abandoned.add(ticket)
                if self._serving == ticket:   # its turn came as it gave up: pass it on
                    self._advance()
                raise
        return self

    def __exit__(self, *exc) -> None:
        with self._turns:
            self._advance()

    def _advance(self) -> None:
        self._serving += 1
        while self._serving in self._abandoned:
            self._abandoned.discard(self._serving)
            self._serving += 1
        self._turns.notify_all()


class SentenceEncoder:
    """A sentence-transformers model from a prepared (verified) folder.

    ``dtype`` auto: float16 on a GPU, float32 on the CPU. ``pipeline`` (default: on a GPU) encodes long inputs with
    the tokenising threads described above (``pipeline_threads``, default a quarter of the cores, 1 to 4)."""

    def __init__(self, model_dir: Path, device: str | None = None, dtype: str = "auto",
                 pipeline: bool | None = None, pipeline_threads: int | None = None):
        from sentence_transformers import SentenceTransformer

        model_dir = Path(model_dir)
        verify(model_dir)
        self.device = device or pick_device()
        if dtype not in ("auto", "float32", "float16"):
            raise ValueError(f"encoder dtype must be auto, float32 or float16, got {dtype!r}")
        self.model = SentenceTransformer(str(model_dir), device=self.device, local_files_only=True)
        self.dtype = dtype if dtype != "auto" else "float16" if self.device.startswith("cuda") else "float32"
        if self.dtype == "float16":
            self.model.half()
        self.pipeline = self.device.startswith("cuda") if pipeline is None else pipeline
        self.pipeline_threads = pipeline_threads or min(4, max(1, (os.cpu_count() or 1) // 4))
        self._fast = False
        self.dim = self.model.get_embedding_dimension()
        # Prefixes the model was trained with ({"query": ..., "passage": ...}; e5's "query: "/"passage: "), if any.
        prompts_file = model_dir / PROMPTS_FILE
        self.prompts = json.loads(prompts_file.read_text()) if prompts_file.is_file() else {}
        # The manifest changes whenever the weights do, so its hash names this exact model.
        digest = hashlib.sha256((model_dir / MANIFEST).read_bytes()).hexdigest()[:12]
        self.encoder_id = f"{model_dir.name}@{digest}"
        # A fast tokenizer is not thread-safe: each call sets its padding and truncation state, so an upload's
        # chunker counting tokens while the query batcher encodes made searches fail ("Unable to create tensor").
        # Counting gets its own copy; encodes take turns on the model's, slice by slice and in arrival order, so
        # queries and other collections' uploads interleave with a long ingest.
        self._counter = copy.deepcopy(self.model.tokenizer)
        self._count_lock = threading.Lock()
        self._encode_lock = FairLock()

    @property
    def max_tokens(self) -> int:
        return self.model.max_seq_length

    def count_tokens(self, text: str) -> int:
        with self._count_lock:
            return len(self._counter.encode(text, add_special_tokens=False, verbose=False))

    def encode(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Passages (with the model's passage prefix, if it has one)."""
        return self._encode(_prefixed(self.prompts.get("passage"), texts), batch_size, show_progress)

    def encode_queries(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        return self._encode(_prefixed(self.prompts.get("query"), texts), batch_size, show_progress)

    def _encode(self, texts: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.pipeline and len(texts) > batch_size:
            return self._encode_pipelined(texts, max(batch_size, PIPELINE_BATCH), show_progress)
        parts = []
        for start in tqdm(range(0, len(texts), batch_size), desc="encoding", unit="batch",
                          disable=not show_progress or len(texts) <= batch_size):
            with self._encode_lock:
                parts.append(self.model.encode(texts[start:start + batch_size], batch_size=batch_size,
                                               normalize_embeddings=True, convert_to_numpy=True,
                                               show_progress_bar=False))
        return np.concatenate(parts).astype(np.float32, copy=False)  # (N, D)

    def _fast_tokeniser(self):
        """The fast tokenizer's Rust core, padding and truncating as sentence-transformers does, with the features'
        other entries; None when it does not give exactly what ``preprocess`` gives on probe texts."""
        import torch

        core = getattr(self.model.tokenizer, "_tokenizer", None)
        if core is None:
            return None
        core = copy.deepcopy(core)
        core.enable_truncation(self.model.max_seq_length)
        core.enable_padding(pad_id=self.model.tokenizer.pad_token_id, pad_token=self.model.tokenizer.pad_token)
        with self._encode_lock:
            expected = self.model.preprocess(list(PROBE_TEXTS))
        keys = [k for k, v in expected.items() if torch.is_tensor(v)]
        if any(k not in _COLUMNS for k in keys):   # a feature the Rust core does not make
            return None
        extras = {k: v for k, v in expected.items() if not torch.is_tensor(v)}
        got = _tokenise(core, list(PROBE_TEXTS), keys, extras)
        same = all(got[k].shape == expected[k].shape and bool((got[k] == expected[k]).all()) for k in keys)
        return (core, keys, extras) if same else None

    def _encode_pipelined(self, texts: list[str], batch_size: int, show_progress: bool) -> np.ndarray:
        import torch

        # Longest first, as sentence-transformers does: batches of alike lengths waste little on padding.
        order = np.argsort([-len(t) for t in texts], kind="stable")
        batches: queue.Queue = queue.Queue()
        for i in range(0, len(order), batch_size):
            batches.put(order[i:i + batch_size])
        n_batches = batches.qsize()
        if self._fast is False:   # checked once, on first use
            self._fast = self._fast_tokeniser()
        fast = self._fast
        # Tokenising in Rust releases the GIL, so several threads keep a fast GPU fed; without the Rust core,
        # one thread runs sentence-transformers' preprocess under the lock it shares with query encodes.
        threads = self.pipeline_threads if fast is not None else 1
        ready: queue.Queue = queue.Queue(maxsize=PIPELINE_AHEAD + threads)
        stop = threading.Event()
        pin = self.device.startswith("cuda")

        def tokenise(core) -> None:
            try:
                while not stop.is_set():
                    try:
                        rows = batches.get_nowait()
                    except queue.Empty:
                        return
                    batch = [texts[i] for i in rows]
                    if core is not None:
                        features = _tokenise(core, batch, fast[1], fast[2])
                    else:
                        with self._encode_lock:   # the tokenizer is shared with query encodes
                            features = self.model.preprocess(batch)
                    if pin:
                        features = {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in features.items()}
                    while not stop.is_set():
                        try:
                            ready.put((rows, features), timeout=0.1)
                            break
                        except queue.Full:
                            continue
            except BaseException as exc:   # re-raised by the encoding thread
                stop.set()
                ready.put((None, exc))

        for _ in range(threads):
            core = copy.deepcopy(fast[0]) if fast is not None else None   # one Rust tokenizer a thread
            threading.Thread(target=tokenise, args=(core,), daemon=True).start()
        parts, done = [], []
        try:
            with torch.inference_mode():
                for _ in tqdm(range(n_batches), desc="encoding", unit="batch", disable=not show_progress):
                    rows, features = ready.get()
                    if rows is None:
                        raise features
                    features = {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v
                                for k, v in features.items()}
                    vectors = self.model(features)["sentence_embedding"].float()
                    parts.append(torch.nn.functional.normalize(vectors, p=2, dim=1))   # stays on the device
                    done.append(rows)
        finally:
            stop.set()
        vectors = torch.cat(parts).cpu().numpy()   # one copy back, at the end
        result = np.empty_like(vectors)
        result[np.concatenate(done)] = vectors
        return result


def _prefixed(prefix: str | None, texts: list[str]) -> list[str]:
    return [prefix + text for text in texts] if prefix else list(texts)


# Tokenised both ways before the fast path is trusted: plain, accented, and one past any model's length limit.
PROBE_TEXTS = ("How do I cancel my subscription?", "Café naïve — ünïcödé, emoji 🙂 and CJK 東京",
               " ".join(["overflowing"] * 2000), "")


_COLUMNS = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}   # feature: Encoding


def _tokenise(core, batch: list[str], keys: list[str], extras: dict) -> dict:
    import torch

    encodings = core.encode_batch(batch)
    features = {k: torch.from_numpy(np.array([getattr(e, _COLUMNS[k]) for e in encodings], dtype=np.int64))
                for k in keys}
    return {**features, **extras}
