"""BM25 saved per generation and updated per commit (retrieval/bm25.py): the same scores as a fresh bm25s index
over the live chunks, whatever happened before; never rebuilt on open."""
import random

import bm25s
import numpy as np
import pytest
import Stemmer

import retrieval.bm25 as bm25_module
from ingest.chunker import Chunker
from retrieval.bm25 import BM25Index
from retrieval.collection import Collection
from tests.fakes import make_kb

WORDS = ("refund invoice cookie team export password account billing plan annual monthly csv dashboard site "
         "goal event email domain script proxy privacy data retention api key report").split()
QUERIES = ["refund for an annual plan", "refund refund csv", "export csv report", "cookie privacy data", "api key for the dashboard",
           "reset password email", "proxy script domain"]


def corpus(n, seed=0):
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 25))) for _ in range(n)]


def reference(keys, texts, query, k):
    """What a fresh bm25s index over these texts answers (scores > 0, keyed like ours)."""
    stemmer = Stemmer.Stemmer("english")
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    docs, scores = retriever.retrieve(bm25s.tokenize([query], stopwords="en", stemmer=stemmer, show_progress=False),
                                      k=min(k, len(texts)), show_progress=False)
    return {keys[int(d)]: float(s) for d, s in zip(docs[0], scores[0]) if s > 0}


def assert_same_as_fresh(index, live: dict, k=10):
    keys, texts = list(live), list(live.values())
    assert index.size == len(live) and sorted(index.keys.tolist()) == sorted(keys)
    for query in QUERIES:
        ours = dict(index.search(query, k))
        expected = reference(keys, texts, query, k)
        # Top-k sets can differ only at ties on the k-th score; compare the scores of what both return.
        common = set(ours) & set(expected)
        assert len(common) >= min(len(ours), len(expected)) - 2, query
        for key in common:
            assert ours[key] == pytest.approx(expected[key], rel=1e-4), query


def test_a_fresh_index_scores_like_bm25s():
    texts = corpus(300)
    keys = list(range(1000, 1300))
    assert_same_as_fresh(BM25Index.build(keys, texts), dict(zip(keys, texts)))


def test_updates_removals_and_merges_keep_bm25s_scores(monkeypatch):
    monkeypatch.setattr(bm25_module, "MERGE_MIN", 40)   # merge after a few commits, to check it too
    rng = random.Random(1)
    live = dict(zip(range(200), corpus(200)))
    index = BM25Index.build(list(live), list(live.values()))
    next_key, mains = 200, {index.main_id}
    for step in range(8):
        removed = rng.sample(sorted(live), 15)
        for key in removed:
            live.pop(key)
        added = corpus(20, seed=step + 10) + [f"brandnewterm{step} refund"]
        added_keys = list(range(next_key, next_key + len(added)))
        next_key += len(added)
        live.update(zip(added_keys, added))
        index = index.updated(removed, added_keys, added)
        mains.add(index.main_id)
        assert_same_as_fresh(index, live)
    assert len(mains) > 1 and len(index.delta.keys) < 40 + 21      # merged at least once, the delta stays small
    assert index.search(f"brandnewterm7", 3)[0][0] == next_key - 1  # a term first seen in an update is found


def test_a_removed_then_readded_key_is_found_once():
    index = BM25Index.build([1, 2], ["refunds are paid", "cookies are never used"])
    index = index.updated([1], [1], ["refunds are paid within five days"])
    assert [key for key, _ in index.search("refunds paid", 5)] == [1] and index.size == 2


def test_save_load_and_prune(tmp_path):
    texts = corpus(100)
    index = BM25Index.build(list(range(100)), texts)
    index.save(tmp_path, "gen-1")
    later = index.updated([0, 1], [500], ["refund annual plan"])
    later.save(tmp_path, "gen-2")
    assert later.main_id == index.main_id and len(list(tmp_path.glob("main-*"))) == 1   # the main is shared
    loaded = BM25Index.load(tmp_path, "gen-2")
    for query in QUERIES:
        assert loaded.search(query, 10) == later.search(query, 10)
    (tmp_path / "gen-3.tmp999999999").write_bytes(b"half written by a killed writer")
    (tmp_path / "main-orphan").mkdir()
    BM25Index.prune(tmp_path, "gen-2", pid_alive=lambda pid: False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gen-2.npz", f"main-{index.main_id}"]


def chunker(encoder):
    return Chunker(encoder.count_tokens, chunk_tokens=50, overlap_tokens=5)


def test_a_collection_updates_bm25_on_commit_and_loads_it_on_open(tmp_path, fake_encoder, monkeypatch):
    kb = make_kb(tmp_path / "kb")
    collection = Collection(tmp_path / "home" / "c", fake_encoder, create=True)
    collection.ingest(kb, chunker(fake_encoder))
    first_main = collection.snapshot().bm25.main_id

    def no_rebuild(self):
        raise AssertionError("BM25 rebuilt from every chunk")

    monkeypatch.setattr("retrieval.index_generations.IndexGenerations.build_bm25", no_rebuild)
    (kb / "exports.md").write_text("# Exports\nExport stats as CSV files from the dashboard.")
    (kb / "privacy.md").unlink()
    collection.ingest(kb, chunker(fake_encoder))
    assert collection.snapshot().bm25.main_id == first_main      # the commit added a delta, the main stayed
    assert collection.search("export csv", k=1, mode="bm25")[0].chunk.source == "exports.md"
    assert all(h.chunk.source != "privacy.md" for h in collection.search("cookies personal data", k=5, mode="bm25"))
    reopened = Collection(collection.directory, fake_encoder)         # opening reads the saved state
    assert reopened.search("export csv", k=1, mode="bm25")[0].chunk.source == "exports.md"
    assert sorted(p.name for p in (collection.directory / "bm25").iterdir()) == [
        f"gen-{collection.store.generation}.npz", f"main-{first_main}"]


def test_a_missing_or_corrupt_bm25_state_is_rebuilt_from_the_store(tmp_path, fake_encoder):
    collection = Collection(tmp_path / "home" / "c", fake_encoder, create=True)
    collection.ingest(make_kb(tmp_path / "kb"), chunker(fake_encoder))
    [state] = (collection.directory / "bm25").glob("gen-*.npz")
    state.write_bytes(b"garbage")
    assert Collection(collection.directory, fake_encoder).search("refunds paid", k=1, mode="bm25")[0].chunk.source == "billing.md"
    for main in (collection.directory / "bm25").glob("main-*"):
        for f in main.iterdir():
            f.unlink()
    state.unlink()
    assert Collection(collection.directory, fake_encoder).search("refunds paid", k=1, mode="bm25")[0].chunk.source == "billing.md"
