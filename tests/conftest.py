import hashlib
import os
import re
import socket

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Tests never leave the machine: only loopback connections are allowed."""
    real_connect = socket.socket.connect

    def guarded(self, address):
        host = address[0] if isinstance(address, tuple) else address
        if isinstance(host, str) and host not in ("127.0.0.1", "localhost", "::1") and not host.startswith("/"):
            raise RuntimeError(f"test tried to reach the network: {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded)


class FakeEncoder:
    """Bag of words hashed into 64 buckets, L2-normalised: cosine = shared-word overlap, checkable by hand."""

    dim = 64

    def __init__(self, encoder_id: str = "fake@1"):
        self.encoder_id = encoder_id
        self.calls: list[int] = []  # how many texts each encode() call got

    @staticmethod
    def words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", text.lower())

    def count_tokens(self, text: str) -> int:
        return len(self.words(text))

    def encode(self, texts, batch_size=64, show_progress=False):
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in self.words(text):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)


@pytest.fixture
def fake_encoder():
    return FakeEncoder()
