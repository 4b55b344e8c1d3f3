"""Teacher embeddings cached by content hash: a re-distillation encodes only text it has not seen."""
from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from retrieval.encoder import TextEncoder, encode_queries


class TeacherCache:
    def __init__(self, path: Path, teacher: TextEncoder, slice_size: int = 256):
        self.teacher = teacher
        self.slice = slice_size
        self.db = sqlite3.connect(Path(path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vector BLOB NOT NULL)")
        self.encoded = 0  # texts actually sent to the teacher by this object

    def _key(self, text: str, as_query: bool = False) -> str:
        # The teacher's id is part of the key: another teacher's vectors never answer. A teacher that prefixes
        # questions (e5's "query: ") encodes a text two ways; one without a prefix keeps the keys it always had.
        kind = "query\x00" if as_query and getattr(self.teacher, "prompts", {}).get("query") else ""
        return hashlib.sha256(f"{self.teacher.encoder_id}\x00{kind}{text}".encode()).hexdigest()

    def encode(self, texts: list[str], show_progress: bool = False, queries: bool = False) -> np.ndarray:
        """The teacher's vectors of ``texts``, as passages or, with ``queries``, as questions."""
        keys = [self._key(t, queries) for t in texts]
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            batch = unique[start:start + 500]
            rows = self.db.execute(f"SELECT key, vector FROM vectors WHERE key IN ({','.join('?' * len(batch))})", batch)
            found.update({k: np.frombuffer(v, dtype=np.float32) for k, v in rows})
        todo = list(dict.fromkeys(t for t, k in zip(texts, keys) if k not in found))
        # Written as it goes: a distillation killed in the teacher stage keeps what the teacher already encoded.
        for start in tqdm(range(0, len(todo), self.slice), desc="teacher", unit="slice",
                          disable=not show_progress or not todo):
            part = todo[start:start + self.slice]
            vectors = encode_queries(self.teacher, part) if queries else self.teacher.encode(part)
            rows = [(self._key(t, queries), v.astype(np.float32).tobytes()) for t, v in zip(part, vectors)]
            self.db.execute("BEGIN")
            self.db.executemany("INSERT OR REPLACE INTO vectors (key, vector) VALUES (?, ?)", rows)
            self.db.execute("COMMIT")
            found.update({self._key(t, queries): v for t, v in zip(part, vectors)})
            self.encoded += len(part)
        if not texts:
            return np.zeros((0, self.teacher.dim), dtype=np.float32)
        return np.stack([found[k] for k in keys]).astype(np.float32)

    def close(self) -> None:
        self.db.close()
