import pytest

from ingest.chunker import Chunker
from retrieval.collection import Collection
from retrieval.collection_encoder import EncoderMismatch
from retrieval.home import UnknownCollection
from retrieval.vector_index import VectorIndex
from tests.fakes import DOCS, FakeEncoder, hostile_files, make_kb


@pytest.fixture
def kb(tmp_path):
    return make_kb(tmp_path / "kb")


@pytest.fixture
def collection(tmp_path, fake_encoder):
    return Collection(tmp_path / "home" / "default", fake_encoder, create=True)


def chunker(encoder):
    return Chunker(encoder.count_tokens, chunk_tokens=50, overlap_tokens=5)


def sources(hits):
    return [h.chunk.source for h in hits]


def test_ingest_then_search_each_mode(kb, collection, fake_encoder):
    report = collection.ingest(kb, chunker(fake_encoder))
    assert sorted(report.added) == ["billing.md", "faq/teams.md", "privacy.md"]
    assert report.chunks_total == 4 and report.chunks_embedded == 4 and not report.errors
    for mode in ("dense", "bm25", "hybrid"):
        hits = collection.search("how are refunds paid back", k=2, mode=mode)
        assert sources(hits)[0] == "billing.md", mode
        assert hits[0].chunk.heading == "Refunds"
        assert hits[0].dense_score is not None and -1.0 <= hits[0].dense_score <= 1.0
    assert collection.stats()["index"] == "flat"


def test_reingest_unchanged_embeds_nothing(kb, collection, fake_encoder):
    collection.ingest(kb, chunker(fake_encoder))
    generation = collection.store.generation
    report = collection.ingest(kb, chunker(fake_encoder))
    assert len(report.unchanged) == 3 and report.chunks_embedded == 0
    assert collection.store.generation == generation  # nothing committed, index untouched


def test_changed_file_reembeds_only_its_new_chunks_and_removed_file_leaves(kb, collection, fake_encoder):
    collection.ingest(kb, chunker(fake_encoder))
    (kb / "billing.md").write_text(DOCS["billing.md"].replace("five days", "ten days"))
    (kb / "privacy.md").unlink()
    report = collection.ingest(kb, chunker(fake_encoder))
    assert report.changed == ["billing.md"] and report.removed == ["privacy.md"]
    assert report.chunks_embedded == 1  # the Invoices chunk kept its vector
    assert collection.store.counts() == {"files": 2, "documents": 2, "chunks": 3}
    assert collection.index.size == 3
    assert "privacy.md" not in sources(collection.search("cookies personal data", k=3, mode="dense"))
    assert "ten days" in collection.search("refunds paid back", k=1)[0].chunk.text


def test_bad_file_is_reported_and_keeps_the_stored_version(kb, collection, fake_encoder):
    collection.ingest(kb, chunker(fake_encoder))
    (kb / "privacy.md").write_bytes(b"\xff\xfe\x00broken")
    (kb / "corrupt.pdf").write_bytes(b"%PDF-1.4 nonsense")
    report = collection.ingest(kb, chunker(fake_encoder))
    assert set(report.errors) == {"privacy.md", "corrupt.pdf"}
    assert "looks binary" in report.errors["privacy.md"]
    assert report.removed == []
    assert sources(collection.search("cookies personal data", k=1))[0] == "privacy.md"


def test_crash_while_writing_the_index_leaves_previous_state(kb, collection, fake_encoder, monkeypatch):
    collection.ingest(kb, chunker(fake_encoder))
    before = collection.store.counts()
    (kb / "new.md").write_text("# Exports\nExport stats as CSV files.")

    def crash(self, path):
        raise OSError("disk full")

    monkeypatch.setattr(VectorIndex, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        collection.ingest(kb, chunker(fake_encoder))
    monkeypatch.undo()
    reopened = Collection(collection.directory, fake_encoder)
    assert reopened.store.counts() == before
    assert "new.md" not in sources(reopened.search("export stats csv", k=4))
    assert reopened.ingest(kb, chunker(fake_encoder)).added == ["new.md"]  # and the next run recovers


def test_missing_or_corrupt_index_file_is_rebuilt_from_the_store(kb, collection, fake_encoder):
    collection.ingest(kb, chunker(fake_encoder))
    [index_file] = collection.directory.glob("index-*.faiss")
    index_file.write_bytes(b"garbage")
    reopened = Collection(collection.directory, fake_encoder)
    assert sources(reopened.search("refunds paid back", k=1)) == ["billing.md"]
    index_file.unlink()
    assert Collection(collection.directory, fake_encoder).index.size == 4


def test_collections_are_independent_and_unknown_ones_are_refused(kb, tmp_path, fake_encoder):
    a = Collection(tmp_path / "home" / "a", fake_encoder, create=True)
    b = Collection(tmp_path / "home" / "b", fake_encoder, create=True)
    a.ingest(kb / "privacy.md", chunker(fake_encoder))
    b.ingest(kb / "faq", chunker(fake_encoder))
    assert sources(a.search("anything at all", k=5)) == ["privacy.md"]
    assert sources(b.search("anything at all", k=5)) == ["teams.md"]
    with pytest.raises(UnknownCollection):
        Collection(tmp_path / "home" / "missing", fake_encoder)


def test_a_new_encoder_reembeds_the_whole_collection(kb, collection, fake_encoder):
    collection.ingest(kb, chunker(fake_encoder))
    other = FakeEncoder("fake@2")
    with pytest.raises(EncoderMismatch, match="kbqa ingest"):
        Collection(collection.directory, other).search("refunds", k=1)
    report = Collection(collection.directory, other).ingest(kb, chunker(other))
    assert other.calls == [4] and report.chunks_total == 4
    assert Collection(collection.directory, other).store.get_meta("encoder") == "fake@2"


def test_large_collections_switch_to_hnsw_and_deletions_still_work(tmp_path, fake_encoder):
    root = tmp_path / "many"
    make_kb(root, {f"doc{i}.txt": f"topic{i} alpha{i % 7} beta{i % 11}" for i in range(60)})
    collection = Collection(tmp_path / "home" / "big", fake_encoder, create=True, exact_limit=30)
    collection.ingest(root, chunker(fake_encoder))
    assert collection.stats()["index"] == "hnsw" and collection.index.size == 60
    (root / "doc3.txt").unlink()
    collection.ingest(root, chunker(fake_encoder))
    ids = collection.index.search(fake_encoder.encode(["topic3 alpha3 beta3"]), 60)[1][0]
    stored = {c.faiss_id for c in collection.store.all_chunks()}
    assert collection.index.size == 59 and set(int(i) for i in ids if i >= 0) <= stored
    assert collection.index.tombstones == 1           # updated in place, the removed vector a tombstone
    for i in range(4, 20):                            # past the tombstone share: the commit builds afresh
        (root / f"doc{i}.txt").unlink()
    collection.ingest(root, chunker(fake_encoder))
    assert collection.index.size == 43 and collection.index.tombstones == 0
    reopened = Collection(collection.directory, fake_encoder, exact_limit=30)
    assert reopened.index.size == 43 and reopened.stats()["index"] == "hnsw"


def test_an_ivf_index_an_older_kbqa_wrote_is_served_then_replaced_at_the_next_commit(tmp_path, fake_encoder):
    from tests.test_vector_index_and_fusion import ivf_index

    root = tmp_path / "many"
    make_kb(root, {f"doc{i}.txt": f"topic{i} alpha{i % 7} beta{i % 11}" for i in range(60)})
    collection = Collection(tmp_path / "home" / "big", fake_encoder, create=True, exact_limit=50)
    collection.ingest(root, chunker(fake_encoder))
    ids, vectors = collection.store.all_vectors()
    ivf_index(ids, vectors, nlist=4).save(collection.generations.path(collection.store.generation))
    old = Collection(collection.directory, fake_encoder, exact_limit=50)
    assert old.stats()["index"] == "ivf" and old.index.size == 60
    assert old.search("topic5 alpha5 beta5", k=1)
    (root / "doc3.txt").unlink()
    old.ingest(root, chunker(fake_encoder))
    assert old.stats()["index"] == "hnsw" and old.index.size == 59


def test_promotion_swaps_encoder_and_index_and_a_running_reader_follows(kb, collection, fake_encoder, tmp_path):
    collection.ingest(kb, chunker(fake_encoder))
    new_encoder = FakeEncoder("fake@promoted")
    encoder_dir = collection.directory / "encoders" / "v0001"
    encoder_dir.mkdir(parents=True)
    loaded = []

    def loader(path):
        loaded.append(path)
        return new_encoder

    server_view = Collection(collection.directory, fake_encoder, encoder_loader=loader)  # like a running server
    assert sources(server_view.search("refunds paid back", k=1)) == ["billing.md"]
    chunks = collection.store.all_chunks()
    vectors = dict(zip([c.chunk_id for c in chunks], new_encoder.encode([c.embedding_text() for c in chunks[:-1]])))
    generation = collection.promote(new_encoder, encoder_dir, vectors, trained_on=[c.chunk_id for c in chunks])
    assert collection.store.get_meta("encoder") == "fake@promoted" and collection.encoder is new_encoder
    assert collection.store.get_meta("encoder_dir") == "encoders/v0001" and generation == 2
    assert len(collection.store.distilled_ids()) == len(chunks)
    # The reader picks up the new encoder on its next search, with no error in between.
    assert sources(server_view.search("refunds paid back", k=1)) == ["billing.md"]
    assert loaded == [encoder_dir] and server_view.encoder is new_encoder


def test_a_commit_landing_mid_search_never_silently_shortens_the_results(kb, collection, fake_encoder, monkeypatch):
    # Issue 13, 3: hits removed by a concurrent commit were dropped, so some searches answered with fewer results.
    from retrieval.search import SnapshotMoved

    collection.ingest(kb, chunker(fake_encoder))
    stale = collection.snapshot()       # what a search had in hand when the commit below landed
    (kb / "billing.md").unlink()
    collection.ingest(kb, chunker(fake_encoder))    # 2 chunks left
    with pytest.raises(SnapshotMoved):
        stale.search("refunds paid back", 3, "hybrid", collection.store, collection._lock)
    assert len(stale.search("refunds paid back", 3, "hybrid", collection.store, collection._lock, strict=False)) < 3
    served = iter([stale])
    real = collection.snapshot
    monkeypatch.setattr(collection, "snapshot", lambda: next(served, None) or real())
    hits = collection.search("refunds paid back", k=3)
    assert len(hits) == 2 and "billing.md" not in sources(hits)   # searched again on the committed generation


def test_a_folder_with_hostile_files_ingests_the_rest(kb, collection, fake_encoder):
    for name, data in hostile_files():
        (kb / name).write_bytes(data)
    report = collection.ingest(kb, chunker(fake_encoder))
    assert set(report.errors) == {"deep.json", "fuzzed.pdf", "hugeid.json", "surrogate.json", "dup-b.jsonl"}
    assert sorted(report.added) == ["billing.md", "dup-a.jsonl", "faq/teams.md", "privacy.md"]
    assert collection.search("refunds paid back", k=1)[0].chunk.source == "billing.md"


def test_deleting_a_collection_while_it_is_searched_answers_unknown_collection_never_a_crash(
        tmp_path, fake_encoder, monkeypatch):
    # Issue 13, 4: a search running while its collection was deleted died with "Cannot operate on a closed database".
    from serve.service import KbqaService
    from serve.settings import Settings

    service = KbqaService(Settings(home=tmp_path / "home"), fake_encoder)
    service.ingest(make_kb(tmp_path / "kb"), "doomed")
    collection = service.collection("doomed")       # what a request in flight holds
    in_flight = collection.snapshot()                # ... and the snapshot it is searching
    service.delete_collection("doomed")
    with pytest.raises(UnknownCollection, match="was deleted"):
        collection.search("refunds paid back", 3)     # a request that had the collection, not yet its snapshot
    monkeypatch.setattr(collection, "snapshot", lambda: in_flight)
    with pytest.raises(UnknownCollection, match="was deleted"):
        collection.search("refunds paid back", 3)     # one that was between the index and the store reads
    with pytest.raises(UnknownCollection):
        service.search("refunds paid back", 3, "doomed")


def test_temporary_index_files_of_dead_writers_are_cleaned_up(kb, collection, fake_encoder):
    # Issue 13, 7: a `.tmp` index file left by a killed writer stayed forever.
    import os
    import subprocess

    collection.ingest(kb, chunker(fake_encoder))
    dead = subprocess.Popen(["true"])
    dead.wait()                      # its pid now names no process
    orphan = collection.directory / f"index-7.faiss.tmp{dead.pid}"
    live = collection.directory / f"index-8.faiss.tmp{os.getpid()}"   # a writer still at work
    orphan.write_bytes(b"partial")
    live.write_bytes(b"partial")
    (kb / "privacy.md").unlink()
    collection.ingest(kb, chunker(fake_encoder))
    assert not orphan.exists() and live.exists()


def test_a_failed_ingest_into_a_new_collection_leaves_no_empty_collection(tmp_path, fake_encoder):
    # Issue 13, 7: `kbqa ingest` of a missing path (or of only bad files) left an empty collection listed.
    from serve.service import KbqaService
    from serve.settings import Settings

    service = KbqaService(Settings(home=tmp_path / "home"), fake_encoder)
    with pytest.raises(FileNotFoundError):
        service.ingest(tmp_path / "missing", "typo")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.json").write_text("[{not json")
    report = service.ingest(bad, "broken")
    assert "broken.json" in report.errors and service.collection_names() == []
    service.ingest(make_kb(tmp_path / "kb"), "good")
    service.ingest(bad, "good")                       # an existing collection stays, whatever the ingest did
    assert service.collection_names() == ["good"]
