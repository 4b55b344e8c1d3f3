"""KBQA_VECTOR_STORE=milvus against milvus-lite (embedded Milvus, the same pymilvus client API as a cluster): the same
collection behaviour as the FAISS store, and commits that readers of the previous generation never see half of."""
import functools

import numpy as np
import pytest

pytest.importorskip("pymilvus", reason="pip install kbqa[milvus] (the test extra has it)")
pytest.importorskip("milvus_lite", reason="pip install kbqa[milvus] (the test extra has it)")

from ingest.chunker import Chunker  # noqa: E402
from retrieval.collection import Collection  # noqa: E402
from retrieval.milvus_store import META, MilvusGenerations, MilvusIndex, connect  # noqa: E402
from tests.fakes import DOCS, make_kb  # noqa: E402


@pytest.fixture
def client(tmp_path):
    client = connect(str(tmp_path / "milvus.db"))
    yield client
    client.close()


def chunker(encoder):
    return Chunker(encoder.count_tokens, chunk_tokens=50, overlap_tokens=5)


def milvus_collection(tmp_path, encoder, client, name="default", create=True):
    return Collection(tmp_path / "home" / name, encoder, create=create,
                      vector_store=functools.partial(MilvusGenerations, client=client))


def sources(hits):
    return [h.chunk.source for h in hits]


def test_ingest_search_update_and_remove_like_the_faiss_store(tmp_path, fake_encoder, client):
    kb = make_kb(tmp_path / "kb")
    collection = milvus_collection(tmp_path, fake_encoder, client)
    collection.ingest(kb, chunker(fake_encoder))
    assert collection.stats()["index"] == "milvus" and collection.index.size == 4
    for mode in ("dense", "hybrid"):
        hits = collection.search("how are refunds paid back", k=2, mode=mode)
        assert sources(hits)[0] == "billing.md" and hits[0].dense_score is not None
    (kb / "billing.md").write_text(DOCS["billing.md"].replace("five days", "ten days"))
    (kb / "privacy.md").unlink()
    report = collection.ingest(kb, chunker(fake_encoder))
    assert report.changed == ["billing.md"] and report.removed == ["privacy.md"]
    assert collection.index.size == 3
    assert "privacy.md" not in sources(collection.search("cookies personal data", k=3, mode="dense"))
    assert "ten days" in collection.search("refunds paid back", k=1, mode="dense")[0].chunk.text
    # After a commit, rows the previous generation still sees stay (its readers may be mid-search); older go.
    (kb / "exports.md").write_text("# Exports\nExport stats as CSV files.")
    (kb / "faq" / "teams.md").unlink()
    collection.ingest(kb, chunker(fake_encoder))
    name = collection.store.get_meta(META)
    total = client.query(name, filter="", output_fields=["count(*)"])[0]["count(*)"]
    assert collection.index.size == 3 and total == 3 + 1    # + the teams chunk, removed by this very commit
    reopened = milvus_collection(tmp_path, fake_encoder, client, create=False)
    assert sources(reopened.search("export stats csv", k=1, mode="dense")) == ["exports.md"]


def test_a_reader_of_the_committed_generation_never_sees_a_commit_in_progress(tmp_path, fake_encoder, client,
                                                                              monkeypatch):
    kb = make_kb(tmp_path / "kb")
    collection = milvus_collection(tmp_path, fake_encoder, client)
    collection.ingest(kb, chunker(fake_encoder))
    generation = collection.store.generation
    reader = MilvusIndex(client, collection.store.get_meta(META), generation)
    before = reader.search(fake_encoder.encode(["cookies personal data"]), 4)[1][0].tolist()

    # The store's transaction fails after Milvus took the change: it must stay invisible to generation readers.
    (kb / "privacy.md").unlink()
    (kb / "exports.md").write_text("# Exports\nExport stats as CSV files.")
    monkeypatch.setattr("retrieval.index_generations.IndexGenerations.save_bm25",
                        lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        collection.ingest(kb, chunker(fake_encoder))
    monkeypatch.undo()
    assert collection.store.generation == generation
    assert reader.size == 4
    assert reader.search(fake_encoder.encode(["cookies personal data"]), 4)[1][0].tolist() == before
    # The next commit clears what the failed one left, then applies the change once.
    collection.ingest(kb, chunker(fake_encoder))
    assert collection.index.size == 4 and "privacy.md" not in sources(collection.search("cookies", k=4, mode="dense"))
    assert sources(collection.search("export stats csv", k=1, mode="dense")) == ["exports.md"]


def test_a_promotion_writes_a_new_milvus_collection_and_drops_the_old(tmp_path, fake_encoder, client):
    from tests.fakes import FakeEncoder

    collection = milvus_collection(tmp_path, fake_encoder, client)
    collection.ingest(make_kb(tmp_path / "kb"), chunker(fake_encoder))
    old = collection.store.get_meta(META)
    student = FakeEncoder("fake@2")
    (tmp_path / "home" / "default" / "encoders" / "v1").mkdir(parents=True)
    chunks = collection.store.all_chunks()
    vectors = dict(zip([c.chunk_id for c in chunks], student.encode([c.embedding_text() for c in chunks])))
    collection.promote(student, tmp_path / "home" / "default" / "encoders" / "v1", vectors)
    new = collection.store.get_meta(META)
    assert new != old and client.list_collections() == [new]
    assert sources(collection.search("how are refunds paid back", k=1, mode="dense")) == ["billing.md"]


def test_vectors_lost_from_milvus_are_rebuilt_from_the_store(tmp_path, fake_encoder, client):
    collection = milvus_collection(tmp_path, fake_encoder, client)
    collection.ingest(make_kb(tmp_path / "kb"), chunker(fake_encoder))
    client.drop_collection(collection.store.get_meta(META))
    reopened = milvus_collection(tmp_path, fake_encoder, client, create=False)
    assert sources(reopened.search("how are refunds paid back", k=1, mode="dense")) == ["billing.md"]
    assert reopened.index.size == 4


def test_the_service_uses_milvus_when_configured_and_a_deleted_collection_leaves_nothing(tmp_path, fake_encoder):
    from serve.service import KbqaService
    from serve.settings import Settings

    settings = Settings(home=tmp_path / "home", vector_store="milvus")
    service = KbqaService(settings, fake_encoder)
    service.ingest(make_kb(tmp_path / "kb"), "docs")
    assert service.collection("docs").stats()["index"] == "milvus"
    assert sources(service.search("how are refunds paid back", 1, "docs")) == ["billing.md"]
    assert (tmp_path / "home" / "milvus.db").exists()          # milvus-lite's file, under KBQA_HOME by default
    service.delete_collection("docs")
    assert service._milvus.list_collections() == []
    service.close()


def test_two_collections_never_share_milvus_rows(tmp_path, fake_encoder, client):
    a = milvus_collection(tmp_path, fake_encoder, client, "a")
    b = milvus_collection(tmp_path, fake_encoder, client, "b")
    a.ingest(make_kb(tmp_path / "kb"), chunker(fake_encoder))
    b.ingest(make_kb(tmp_path / "kb2", {"other.md": "# Other\nSomething else entirely."}), chunker(fake_encoder))
    assert a.index.size == 4 and b.index.size == 1
    assert np.all(b.index.search(fake_encoder.encode(["refunds"]), 4)[1][0][1:] == -1)


def test_an_unreachable_milvus_is_a_clear_error_at_start(tmp_path, fake_encoder):
    from retrieval.milvus_store import MilvusUnavailable
    from serve.service import KbqaService
    from serve.settings import Settings

    with pytest.raises(MilvusUnavailable, match="cannot open Milvus at http://127.0.0.1:1"):
        KbqaService(Settings(home=tmp_path / "home", vector_store="milvus", milvus_uri="http://127.0.0.1:1"),
                    fake_encoder)


def test_rows_are_retagged_in_batches(tmp_path, fake_encoder, client, monkeypatch):
    monkeypatch.setattr("retrieval.milvus_store.BATCH", 1)   # every query, insert and upsert one row at a time
    kb = make_kb(tmp_path / "kb")
    collection = milvus_collection(tmp_path, fake_encoder, client)
    collection.ingest(kb, chunker(fake_encoder))
    (kb / "billing.md").unlink()                               # two chunks
    (kb / "privacy.md").unlink()
    collection.ingest(kb, chunker(fake_encoder))
    assert collection.index.size == 1 and sources(collection.search("refunds", k=4, mode="dense")) == ["faq/teams.md"]
