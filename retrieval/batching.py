"""Micro-batching of query encoding: concurrent single-query requests share one forward pass.

A request waits at most ``max_wait_ms`` for company; one forward pass of 16 short queries costs far
less than 16 passes of one on a CPU, so under load throughput goes up and tail latency down.
Bulk encodes (ingest, distillation) bypass the queue.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future

import numpy as np

from retrieval.encoder import encode_queries


class BatchingEncoder:
    def __init__(self, encoder, max_batch: int = 32, max_wait_ms: float = 3.0):
        self.inner = encoder
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self._queue: queue.Queue[tuple[str, Future]] = queue.Queue()
        self.batches: list[int] = []   # sizes of the batches run, newest last (kept short): for tests and stats
        threading.Thread(target=self._work, name="query-batcher", daemon=True).start()

    def __getattr__(self, name):  # encoder_id, dim, count_tokens, max_tokens, model ... come from the inner encoder
        return getattr(self.inner, name)

    def encode(self, texts: list[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        return self.inner.encode(texts, batch_size=batch_size, show_progress=show_progress)

    def encode_queries(self, texts: list[str]) -> np.ndarray:
        if len(texts) != 1:
            return encode_queries(self.inner, texts)
        future: Future = Future()
        self._queue.put((texts[0], future))
        return future.result()[None, :]

    def _work(self) -> None:
        while True:
            pending = [self._queue.get()]
            try:
                while len(pending) < self.max_batch:
                    # With max_wait 0, take only what is already queued: a lone request never waits,
                    # and under load the queries that arrived during the last pass form the next batch.
                    pending.append(self._queue.get(timeout=self.max_wait) if self.max_wait else self._queue.get_nowait())
            except queue.Empty:
                pass
            try:
                vectors = encode_queries(self.inner, [text for text, _ in pending])
                for (_, future), vector in zip(pending, vectors):
                    future.set_result(vector)
            except Exception as exc:  # every waiting request sees the failure; the worker lives on
                for _, future in pending:
                    future.set_exception(exc)
            self.batches = (self.batches + [len(pending)])[-1000:]
