"""Sentence encoder: texts in, L2-normalised float32 vectors out."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

import numpy as np

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

    @property
    def max_tokens(self) -> int:
        return self.model.max_seq_length

    def count_tokens(self, text: str) -> int:
        return len(self.model.tokenizer.encode(text, add_special_tokens=False, verbose=False))

    def encode(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=show_progress)
        return vectors.astype(np.float32, copy=False)  # (N, D)
