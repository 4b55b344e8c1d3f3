"""A second writer in a process of its own, for the tests where writers meet (tests/test_writers.py).

    python -m tests.writer_process ingest COLLECTION_DIR FOLDER [--ready FILE] [--encode-sleep S]
    python -m tests.writer_process hold COLLECTION_DIR SECONDS --ready FILE
    python -m tests.writer_process upload-and-die COLLECTION_DIR NAME...      (killed by SIGKILL mid-ingest)
    python -m tests.writer_process milvus URI COLLECTION_DIR (ingest FOLDER | search QUERY)

``--ready FILE`` is written once the collection's write lock is held, so the test knows the writer is inside.
Prints the ingest report (or the search's sources) as JSON on its last line.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import time
from pathlib import Path

from ingest.chunker import Chunker
from retrieval.collection import Collection
from tests.fakes import FakeEncoder


class SlowEncoder(FakeEncoder):
    """Signals it is inside an ingest (the write lock held), then takes its time: the other writer meets it."""

    def __init__(self, ready: Path | None, sleep_s: float, die: bool = False):
        super().__init__()
        self.ready, self.sleep_s, self.die = ready, sleep_s, die

    def encode(self, texts, batch_size=64, show_progress=False):
        if texts and self.ready is not None:
            self.ready.write_text("inside")
        if texts and self.die:
            os.kill(os.getpid(), signal.SIGKILL)   # as `kill -9` of the server mid-upload
        time.sleep(self.sleep_s if texts else 0)
        return super().encode(texts, batch_size, show_progress)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["ingest", "hold", "upload-and-die", "milvus"])
    parser.add_argument("args", nargs="+")
    parser.add_argument("--ready", type=Path)
    parser.add_argument("--encode-sleep", type=float, default=0.0)
    options = parser.parse_args()
    action, args = options.action, options.args
    if action == "milvus":
        from retrieval.milvus_store import MilvusGenerations, connect

        client = connect(args[0])
        store = functools.partial(MilvusGenerations, client=client)
        collection = Collection(Path(args[1]), FakeEncoder(), create=True, vector_store=store)
        if args[2] == "ingest":
            report = collection.ingest(Path(args[3]), Chunker(FakeEncoder().count_tokens, 50, 5))
            print(json.dumps(report.to_dict()))
        else:
            print(json.dumps([hit.chunk.source for hit in collection.search(args[3], k=3)]))
        client.close()
        return
    encoder = SlowEncoder(options.ready, options.encode_sleep, die=action == "upload-and-die")
    collection = Collection(Path(args[0]), encoder, create=True)
    chunker = Chunker(encoder.count_tokens, 50, 5)
    if action == "ingest":
        print(json.dumps(collection.ingest(Path(args[1]), chunker).to_dict()))
    elif action == "hold":
        with collection.writing():
            options.ready.write_text("held")
            time.sleep(float(args[1]))
        print(json.dumps({"held_s": float(args[1])}))
    else:
        from serve.documents import DocumentManager

        files = [(name, f"# {name}\n\nA page about {name} that a killed upload sent.\n".encode()) for name in args[1:]]
        DocumentManager(chunker).upload(collection, files)   # never returns: the encoder kills this process


if __name__ == "__main__":
    main()
