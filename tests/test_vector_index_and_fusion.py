import numpy as np
import pytest

from retrieval.fusion import reciprocal_rank_fusion
from retrieval.vector_index import VectorIndex


def unit_rows(n, dim, seed=0):
    rows = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def ivf_index(ids, vectors, nlist: int = 16) -> VectorIndex:
    """An IVF index as an older kbqa built them above the exact limit."""
    import faiss

    from retrieval.vector_index import ivf_nprobe

    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(vectors.shape[1]), vectors.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.train(vectors)
    ivf.nprobe = ivf_nprobe(nlist)
    ivf.add_with_ids(vectors, np.asarray(ids, dtype=np.int64))
    return VectorIndex(ivf)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_remove_and_add_keep_ids_right(kind, tmp_path):
    vectors = unit_rows(300, 16)
    ids = np.arange(300, dtype=np.int64) * 10 + 5
    index = ivf_index(ids, vectors) if kind == "ivf" else VectorIndex.build(
        ids, vectors, 16, exact_limit=1000 if kind == "flat" else 10)
    assert index.kind == kind
    index.remove(ids[:100])
    assert index.size == 200
    scores, found = index.search(vectors[150:151], 1)
    assert found[0, 0] == ids[150] and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    _, every = index.search(vectors[:5], 300)      # a removed vector never comes back, even as its own match
    assert not set(every.ravel().tolist()) & set(ids[:100].tolist())
    index.add(np.array([7]), vectors[:1])
    assert index.search(vectors[:1], 1)[1][0, 0] == 7 and index.size == 201
    index.add(ids[1:2], vectors[1:2])                # a removed id comes back (a chunk rewritten in place)
    assert index.search(vectors[1:2], 1)[1][0, 0] == ids[1] and index.size == 202
    index.save(tmp_path / "i.faiss")                 # tombstones are part of the file
    loaded = VectorIndex.load(tmp_path / "i.faiss")
    assert loaded.kind == kind and loaded.size == 202
    assert not set(loaded.search(vectors[:5], 300)[1].ravel().tolist()) & set(ids[2:100].tolist())


def test_hnsw_asks_for_a_rebuild_when_tombstones_pile_up():
    from retrieval.vector_index import HNSW_REBUILD_SHARE

    vectors = unit_rows(200, 16)
    index = VectorIndex.build(np.arange(200), vectors, 16, exact_limit=10)
    index.remove(np.arange(int(200 * HNSW_REBUILD_SHARE)))
    assert not index.needs_rebuild
    index.remove(np.arange(int(200 * HNSW_REBUILD_SHARE), int(200 * HNSW_REBUILD_SHARE) + 2))
    assert index.needs_rebuild


def test_searches_running_while_the_index_changes_see_no_torn_state():
    import threading

    vectors = unit_rows(2000, 16)
    index = VectorIndex.build(np.arange(2000), vectors, 16, exact_limit=10)
    stop, errors = threading.Event(), []

    def search():
        while not stop.is_set():
            try:
                _, found = index.search(vectors[:8], 10)
                assert found.shape == (8, 10)
            except Exception as exc:   # reported below
                errors.append(exc)

    readers = [threading.Thread(target=search) for _ in range(4)]
    for r in readers:
        r.start()
    for i in range(40):   # removals and additions that grow and rewrite the id map under the readers
        index.remove(np.arange(i * 10, i * 10 + 10))
        index.add(np.arange(10_000 + i * 10, 10_000 + i * 10 + 10), vectors[i * 10:i * 10 + 10])
    stop.set()
    for r in readers:
        r.join()
    assert not errors and index.size == 2000


def test_save_is_atomic(tmp_path, monkeypatch):
    vectors = unit_rows(5, 8)
    path = tmp_path / "index.faiss"
    VectorIndex.build(np.arange(5), vectors, 8).save(path)
    import faiss

    def torn_write(index, name):
        open(name, "wb").write(b"half")
        raise OSError("killed")

    monkeypatch.setattr(faiss, "write_index", torn_write)
    with pytest.raises(OSError):
        VectorIndex.build(np.arange(2), vectors[:2], 8).save(path)
    monkeypatch.undo()
    assert VectorIndex.load(path).size == 5


def test_empty_index_returns_nothing():
    index = VectorIndex.build(np.zeros(0, dtype=np.int64), np.zeros((0, 4), dtype=np.float32), 4)
    scores, ids = index.search(unit_rows(2, 4), 3)
    assert scores.shape == (2, 0) and ids.shape == (2, 0)


def test_reciprocal_rank_fusion_exact_scores():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["b", "d"]], k=60)
    assert [key for key, _ in fused] == ["b", "a", "d", "c"]
    assert dict(fused)["b"] == pytest.approx(1 / 62 + 1 / 61)
    assert dict(fused)["a"] == pytest.approx(1 / 61)
    assert dict(fused)["d"] == pytest.approx(1 / 62)
    assert dict(fused)["c"] == pytest.approx(1 / 63)


def test_bm25_over_a_corpus_without_indexable_words_finds_nothing_instead_of_failing():
    from retrieval.bm25 import BM25Index

    assert BM25Index.build([1], ["ö ë 😀 ..."]).search("refunds", 3) == []
    assert BM25Index.build([], []).search("refunds", 3) == []
    assert BM25Index.build([1, 2], ["the a", "refunds paid"]).search("refunds", 3)[0][0] == 2


def test_importing_bm25_keeps_jax_off_the_gpu_unless_the_user_chose():
    # Issue 16: `import bm25s` let JAX take 75% of the GPU's memory. JAX reads JAX_PLATFORMS when it starts.
    import os
    import subprocess
    import sys

    probe = "import retrieval.bm25, os; print(os.environ['JAX_PLATFORMS'])"
    env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
    assert subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "cpu"
    chosen = subprocess.run([sys.executable, "-c", probe], env={**env, "JAX_PLATFORMS": "cuda"},
                            capture_output=True, text=True, check=True).stdout.strip()
    assert chosen == "cuda"


def test_ivf_probes_as_many_lists_as_recall_needs_when_built_and_when_loaded(tmp_path):
    # bench_scale: MiniLM vectors needed 256 of 1,264 lists (100k) and 512 of 4,000 (1M) for recall@10 0.95.
    import faiss

    from retrieval.vector_index import VectorIndex, ivf_nprobe

    vectors = unit_rows(2000, 16)
    index = ivf_index(np.arange(2000), vectors, nlist=64)
    assert ivf_nprobe(1264) >= 256 and ivf_nprobe(4000) >= 512 and ivf_nprobe(4000) < 600 and ivf_nprobe(10) == 10
    assert index.kind == "ivf" and index.cpu_index.nprobe == ivf_nprobe(index.cpu_index.nlist)
    index.cpu_index.nprobe = 1                     # as a file written by an older kbqa would have it
    index.save(tmp_path / "i.faiss")
    loaded = VectorIndex.load(tmp_path / "i.faiss")
    assert isinstance(loaded.cpu_index, faiss.IndexIVF) and loaded.cpu_index.nprobe == ivf_nprobe(loaded.cpu_index.nlist)
