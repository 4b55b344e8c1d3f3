"""The encoder's GPU path (tokenising thread ahead of the forward passes; float16), run on the CPU on a tiny BERT."""
import threading

import numpy as np
import pytest

from retrieval.encoder import SentenceEncoder
from tests.tiny_models import WORDS, build_tiny_sentence_encoder


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_tiny_sentence_encoder(tmp_path_factory.mktemp("enc") / "student")


def texts(n: int) -> list[str]:
    rng = np.random.default_rng(0)   # lengths from 1 to 60 words: batches are cut from a length-sorted order
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 60)))) for _ in range(n)]


def test_pipelined_vectors_equal_the_plain_ones_in_input_order(folder):
    plain = SentenceEncoder(folder, device="cpu", pipeline=False)
    piped = SentenceEncoder(folder, device="cpu", pipeline=True, pipeline_threads=3)
    corpus = texts(1500)   # six pipeline batches of 256, from three threads
    expected = plain.encode(corpus)
    got = piped.encode(corpus)
    assert got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert piped.encode(corpus[:5]).shape == (5, plain.dim)   # short inputs skip the thread
    assert piped.encode([]).shape == (0, plain.dim)


def test_queries_encode_while_a_pipelined_encode_runs(folder):
    encoder = SentenceEncoder(folder, device="cpu", pipeline=True)
    corpus, results = texts(1500), {}
    bulk = threading.Thread(target=lambda: results.setdefault("bulk", encoder.encode(corpus)))
    bulk.start()
    queries = [encoder.encode(["how do i cancel my subscription"]) for _ in range(20)]
    bulk.join(timeout=120)
    assert results["bulk"].shape == (1500, encoder.dim)
    for q in queries:
        np.testing.assert_allclose(q, queries[0], atol=1e-6)


@pytest.mark.parametrize("threads", [1, 3])
def test_a_tokeniser_failure_reaches_the_caller(folder, monkeypatch, threads):
    import retrieval.encoder as module

    encoder = SentenceEncoder(folder, device="cpu", pipeline=True, pipeline_threads=threads)

    def broken(*args):
        raise ValueError("cannot tokenise")

    monkeypatch.setattr(module, "_tokenise", broken)
    encoder._fast = (object(), ["input_ids"], {})   # as if the fast path had passed its check
    with pytest.raises(ValueError, match="cannot tokenise"):
        encoder.encode(texts(600))


def test_the_fast_tokeniser_is_used_only_when_it_matches(folder, monkeypatch):
    import retrieval.encoder as module

    encoder = SentenceEncoder(folder, device="cpu", pipeline=True, pipeline_threads=2)
    assert encoder._fast_tokeniser() is not None      # a BERT tokenizer: the Rust core gives the same features
    real = module._tokenise
    monkeypatch.setattr(module, "_tokenise", lambda core, batch, keys, extras: {
        k: v + 1 if k == "input_ids" else v for k, v in real(core, batch, keys, extras).items()})
    assert encoder._fast_tokeniser() is None           # it disagrees: preprocess is used instead
    plain = SentenceEncoder(folder, device="cpu", pipeline=False)
    corpus = texts(600)
    np.testing.assert_allclose(encoder.encode(corpus), plain.encode(corpus), atol=1e-5)


def test_float16_stays_close_and_returns_float32(folder):
    import torch

    full = SentenceEncoder(folder, device="cpu")
    half = SentenceEncoder(folder, device="cpu", dtype="float16")
    assert full.dtype == "float32" and half.dtype == "float16"
    assert next(half.model.parameters()).dtype == torch.float16
    corpus = texts(50)
    a, b = full.encode(corpus), half.encode(corpus)
    assert b.dtype == np.float32
    assert float((a * b).sum(axis=1).min()) > 0.99
    with pytest.raises(ValueError, match="dtype"):
        SentenceEncoder(folder, device="cpu", dtype="int8")


def test_encode_turns_are_taken_in_arrival_order():
    # Issue 30, 3: with a plain lock an ingest re-took it slice after slice and another collection's upload waited.
    import threading
    import time

    from retrieval.encoder import FairLock

    lock, order = FairLock(), []
    with lock:
        waiter = threading.Thread(target=lambda: (lock.__enter__(), order.append("waiter"), lock.__exit__()))
        waiter.start()
        while lock._next_ticket < 2:   # the waiter holds the next ticket
            time.sleep(0.01)
    with lock:                         # the first holder comes straight back: it queues behind the waiter
        order.append("holder again")
    waiter.join(10)
    assert order == ["waiter", "holder again"]
