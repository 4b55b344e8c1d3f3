"""Loading a file with bounded work: in a worker process that is killed past a time limit.

A parser on a hostile file cannot be interrupted from its own thread (a 1.3 MB HTML nested 100k deep took 29 s in
lexbor, a PDF with 70 MB of text did not finish in 150 s), and it would hold the GIL of the server meanwhile. So the
service loads each file in a small pool of worker processes (pebble restarts a worker it killed); the file past
the limit is the ingest report's error and nothing else waits. Characters are capped in ``load_file`` itself.
"""
from __future__ import annotations

import atexit
import multiprocessing
import os
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from pebble import ProcessExpired, ProcessPool

from ingest.loaders import MAX_FILE_CHARS, LoadError, load_file
from ingest.records import Document

LOAD_TIMEOUT_S = 60.0


class BoundedLoader:
    """``load_file`` with a per-file time limit (seconds) and character cap; a callable (path, source) -> docs.

    Every loader of a process shares one pool of ``WORKERS`` processes, started on the first file (a service that
    never ingests starts none) and stopped at exit: the limits travel with each file, not with the pool."""

    def __init__(self, timeout_s: float = LOAD_TIMEOUT_S, max_chars: int = MAX_FILE_CHARS):
        self.timeout_s, self.max_chars = timeout_s, max_chars

    def __call__(self, path: Path, source: str) -> list[Document]:
        future = _workers().schedule(load_file, args=(Path(path), source, self.max_chars), timeout=self.timeout_s)
        try:
            return future.result()
        except FutureTimeout:
            raise LoadError(source, f"took longer than {self.timeout_s:g} s to load (KBQA_LOAD_TIMEOUT_S): "
                                    "the file is likely malformed or hostile") from None
        except ProcessExpired as exc:   # the parser crashed or ran out of memory: that file only
            raise LoadError(source, f"crashed its loader (exit code {exc.exitcode})") from None


WORKERS = min(4, os.cpu_count() or 1)   # files of different collections load side by side
_pool: ProcessPool | None = None
_pool_lock = threading.Lock()


def _workers() -> ProcessPool:
    global _pool
    with _pool_lock:
        if _pool is None or not _pool.active:
            # spawn, not fork: the server has threads (uvicorn, torch) that a forked child would inherit mid-lock
            _pool = ProcessPool(WORKERS, context=multiprocessing.get_context("spawn"))
            atexit.register(stop_workers)
        return _pool


def stop_workers() -> None:
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.stop()
            _pool.join()
            _pool = None
