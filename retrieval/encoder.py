"""Sentence encoder: texts in, L2-normalised float32 vectors out."""
from __future__ import annotations

import copy
import hashlib
import threading
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm.auto import tqdm

from retrieval.models import MANIFEST, verify


class TextEncoder(Protocol):
    encoder_id: str  # vectors from encoders with different ids never share an index
    dim: int

    def encode(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int: ...


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceEncoder:
    """A sentence-transformers model from a prepared (verified) folder."""

    def __init__(self, model_dir: Path, device: str | None = None):
        from sentence_transformers import SentenceTransformer

        model_dir = Path(model_dir)
        verify(model_dir)
        self.model = SentenceTransformer(str(model_dir), device=device or pick_device(), local_files_only=True)
        self.dim = self.model.get_embedding_dimension()
        # The manifest changes whenever the weights do, so its hash names this exact model.
        digest = hashlib.sha256((model_dir / MANIFEST).read_bytes()).hexdigest()[:12]
        self.encoder_id = f"{model_dir.name}@{digest}"
        # A fast tokenizer is not thread-safe: each call sets its padding and truncation state, so an upload's
        # chunker counting tokens while the query batcher encodes made searches fail ("Unable to create tensor").
        # Counting gets its own copy; encodes take turns on the model's, slice by slice so queries interleave.
        self._counter = copy.deepcopy(self.model.tokenizer)
        self._count_lock = threading.Lock()
        self._encode_lock = threading.Lock()

    @property
    def max_tokens(self) -> int:
        return self.model.max_seq_length

    def count_tokens(self, text: str) -> int:
        with self._count_lock:
            return len(self._counter.encode(text, add_special_tokens=False, verbose=False))

    def encode(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = []
        for start in tqdm(range(0, len(texts), batch_size), desc="encoding", unit="batch",
                          disable=not show_progress or len(texts) <= batch_size):
            with self._encode_lock:
                parts.append(self.model.encode(texts[start:start + batch_size], batch_size=batch_size,
                                               normalize_embeddings=True, convert_to_numpy=True,
                                               show_progress_bar=False))
        return np.concatenate(parts).astype(np.float32, copy=False)  # (N, D)
