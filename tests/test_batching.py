import threading

import numpy as np
import pytest

from retrieval.batching import BatchingEncoder


class CountingEncoder:
    encoder_id, dim = "counting@1", 3

    def __init__(self):
        self.calls = []
        self.gate = threading.Event()

    def encode(self, texts, batch_size=64, show_progress=False):
        self.gate.wait(5)
        self.calls.append(list(texts))
        if "boom" in texts:
            raise RuntimeError("encoder failed")
        return np.array([[len(t), 0.0, 1.0] for t in texts], dtype=np.float32)


def test_concurrent_queries_share_a_batch_and_get_their_own_vector():
    inner = CountingEncoder()
    batcher = BatchingEncoder(inner, max_batch=8, max_wait_ms=50)
    results = {}

    def ask(text):
        results[text] = batcher.encode_queries([text])

    threads = [threading.Thread(target=ask, args=("q" * n,)) for n in range(1, 7)]
    for t in threads:
        t.start()
    inner.gate.set()
    for t in threads:
        t.join(5)
    assert all(results["q" * n].shape == (1, 3) and results["q" * n][0, 0] == n for n in range(1, 7))
    assert len(inner.calls) < 6 and max(batcher.batches) > 1  # batched, not one pass per query
    assert batcher.encoder_id == "counting@1" and batcher.dim == 3


def test_bulk_encodes_bypass_the_queue_and_failures_reach_the_caller():
    inner = CountingEncoder()
    inner.gate.set()
    batcher = BatchingEncoder(inner, max_wait_ms=1)
    assert batcher.encode_queries(["a", "bb"]).shape == (2, 3) and inner.calls == [["a", "bb"]]
    with pytest.raises(RuntimeError, match="encoder failed"):
        batcher.encode_queries(["boom"])
    assert batcher.encode_queries(["ok"])[0, 0] == 2  # the worker survived


def test_token_counting_and_encoding_from_many_threads_never_fail(tmp_path):
    """Issue 13, 3: an upload's chunker counting tokens while queries were encoded broke the shared fast tokenizer
    ("Unable to create tensor"), and searches failed during uploads."""
    import threading

    from retrieval.encoder import SentenceEncoder
    from tests.tiny_models import build_tiny_sentence_encoder

    encoder = SentenceEncoder(build_tiny_sentence_encoder(tmp_path / "enc"), device="cpu")
    long_text = " ".join(["refund invoice monthly email cookies privacy"] * 80)
    expected = encoder.count_tokens(long_text)
    errors: list[str] = []

    def run(job):
        try:
            for i in range(300):
                job(i)
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            errors.append(repr(exc))

    def count(_):
        assert encoder.count_tokens(long_text) == expected

    def query(i):
        assert encoder.encode(["refund how", "a b c " * (i % 7)]).shape == (2, encoder.dim)

    threads = [threading.Thread(target=run, args=(job,)) for job in (count, count, query, query)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
