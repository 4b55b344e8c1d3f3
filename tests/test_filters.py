"""Metadata filters (issue 28): the filter language, metadata from where teams keep it, exact filtered search."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ingest.chunker import Chunker
from retrieval.collection import Collection
from retrieval.filters import FilterError, combined, compile_filter
from retrieval.vector_index import VectorIndex

TV = {"product": "tv", "version": 3.2, "plan": ["business", "enterprise"], "since": "2024-05-01", "beta": False}


@pytest.mark.parametrize("filter_,expected", [
    ({"product": "tv"}, True),
    ({"product": "phone"}, False),
    ({"product": {"$ne": "phone"}}, True),
    ({"version": {"$gte": 3.2, "$lt": 4}}, True),
    ({"version": {"$gt": 3.2}}, False),
    ({"plan": "business"}, True),                          # a list field matches when any item does
    ({"plan": {"$in": ["free", "enterprise"]}}, True),
    ({"plan": {"$nin": ["business"]}}, False),
    ({"since": {"$gte": "2024-01-01"}}, True),
    ({"since": {"$lt": "2024-05-01T00:00:00"}}, False),
    ({"beta": False}, True),
    ({"region": {"$exists": False}}, True),
    ({"region": "eu"}, False),                             # a missing field never equals
    ({"region": {"$ne": "eu"}}, True),
    ({"$or": [{"product": "phone"}, {"version": 3.2}]}, True),
    ({"$and": [{"product": "tv"}, {"$not": {"beta": True}}]}, True),
    ({"product": "tv", "version": {"$lt": 3}}, False),    # fields AND-ed
])
def test_the_filter_language(filter_, expected):
    assert compile_filter(filter_)(TV) is expected


@pytest.mark.parametrize("filter_,where", [
    ({"product": {"$like": "t%"}}, "product.$like"),
    ({"$nor": []}, "$nor"),
    ({"version": {"$gt": "soon"}}, "version.$gt"),
    ({"version": {"$gt": True}}, "version.$gt"),
    ({"plan": {"$in": "business"}}, "plan.$in"),
    ({"plan": ["business"]}, "plan"),
    ({"$or": []}, "$or"),
    ({"$or": [{"a": 1}, "b"]}, "$or[1]"),
    ({"a": {"$exists": 1}}, "a.$exists"),
    ({"a b": 1}, "a b"),
    ([{"a": 1}], "(top)"),
])
def test_a_malformed_filter_names_where_it_is_wrong(filter_, where):
    with pytest.raises(FilterError) as error:
        compile_filter(filter_)
    assert error.value.where == where


def test_combined_filters_can_only_narrow():
    assert combined(None, {}) is None
    assert combined({"a": 1}, None) == {"a": 1}
    both = combined({"tenant": "a"}, {"$or": [{"tenant": "b"}, {"x": 1}]})
    assert compile_filter(both)({"tenant": "b"}) is False and compile_filter(both)({"tenant": "a", "x": 1}) is True


def _kb(root):
    root.mkdir()
    (root / "tv.md").write_text("---\nproduct: tv\nversion: 3.2\ntags: [picture, sound]\n---\n# TV\n\n"
                                "Reset the picture settings from the menu to fix a dark screen.\n")
    (root / "phone.md").write_text("---\nproduct: phone\nversion: 10\n---\n# Phone\n\n"
                                   "Reset the screen settings from the menu to fix a dark screen.\n")
    (root / "faq.jsonl").write_text(json.dumps({"id": "faq-1", "title": "Screen", "text": "A dark screen needs a reset.",
                                                "product": "tv", "plan": ["business"], "nested": {"x": 1}}) + "\n")
    return root


def test_metadata_comes_from_front_matter_and_record_fields_with_its_types(tmp_path, fake_encoder):
    collection = Collection(tmp_path / "home", fake_encoder, create=True)
    collection.ingest(_kb(tmp_path / "kb"), Chunker(fake_encoder.count_tokens, 50, 5))
    docs = {d["doc_id"]: d["metadata"] for d in collection.store.documents()}
    # Every document also carries the language ingest found for it (ingest/language.py).
    assert docs["tv.md"] == {"product": "tv", "version": 3.2, "tags": ["picture", "sound"], "language": "en"}
    assert docs["faq-1"] == {"product": "tv", "plan": ["business"], "language": "en"}   # nested objects left out
    hits = collection.search("dark screen reset", k=5)
    assert {h.chunk.doc_id: h.metadata for h in hits}["phone.md"] == {"product": "phone", "version": 10,
                                                                      "language": "en"}


@pytest.mark.parametrize("mode", ["dense", "bm25", "hybrid"])
def test_filtered_search_returns_only_what_the_filter_keeps_ranked_as_before(tmp_path, fake_encoder, mode):
    collection = Collection(tmp_path / "home", fake_encoder, create=True)
    collection.ingest(_kb(tmp_path / "kb"), Chunker(fake_encoder.count_tokens, 50, 5))
    everything = [h.chunk.doc_id for h in collection.search("dark screen reset", k=5, mode=mode)]
    tv = [h.chunk.doc_id for h in collection.search("dark screen reset", k=5, mode=mode, filter={"product": "tv"})]
    assert set(tv) == {"tv.md", "faq-1"} and tv == [d for d in everything if d != "phone.md"]
    assert collection.search("dark screen reset", k=5, mode=mode, filter={"product": "radio"}) == []
    with pytest.raises(FilterError):
        collection.search("dark screen reset", filter={"product": {"$regex": "t"}})


@pytest.mark.parametrize("exact_limit", [10_000, 10])   # flat, and HNSW (scored directly, and through the graph)
def test_filtered_vector_search_is_exact(exact_limit, monkeypatch):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(3000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(3000, dtype=np.int64) * 7
    index = VectorIndex.build(ids, vectors, 16, exact_limit=exact_limit)
    query = vectors[:3] + 0.1
    for share in (0.5, 0.01):
        allowed = np.sort(rng.choice(ids, size=int(3000 * share), replace=False))
        keep = np.isin(ids, allowed)
        expected = ids[keep][np.argsort(-(query @ vectors[keep].T), axis=1)[:, :10]]
        for limit in (20_000, 5):   # scored directly / walked with the selector
            monkeypatch.setattr("retrieval.vector_index.FILTERED_EXACT_LIMIT", limit)
            _, got = index.search(query, 10, allowed)
            overlap = np.mean([len(set(g) & set(e)) / 10 for g, e in zip(got, expected)])
            assert overlap >= (1.0 if limit > len(allowed) or exact_limit > 3000 else 0.9)


# --- through the API: request filters and keys bound to a slice --------------------------------------------------
TV_PAGE = b"---\nproduct: tv\nplan: business\n---\n# TV reset\n\nReset the picture settings to fix a dark screen.\n"
PHONE_PAGE = b"---\nproduct: phone\nplan: free\n---\n# Phone reset\n\nReset the screen settings to fix a dark screen.\n"


@pytest.fixture
def sliced(tmp_path, fake_encoder):
    from fastapi.testclient import TestClient

    from serve.app import create_app
    from serve.auth import KeyStore
    from tests.fakes import scripted_service

    service, _ = scripted_service(tmp_path, fake_encoder, rate_limit_per_minute=0)
    kb = tmp_path / "products"
    kb.mkdir()
    (kb / "tv.md").write_bytes(TV_PAGE)
    (kb / "phone.md").write_bytes(PHONE_PAGE)
    service.ingest(kb, "default")
    keys = KeyStore(tmp_path / "home" / "keys.sqlite")
    made = {"admin": keys.create("ops", "admin"), "tv": keys.create("tv-widget", "query", None, {"product": "tv"}),
            "tv_admin": keys.create("tv-team", "admin", ["default"], {"product": "tv"})}
    with TestClient(create_app(service.settings, service)) as client:
        yield client, made


def _as(key):
    return {"Authorization": f"Bearer {key}"}


def test_search_and_ask_take_a_filter_and_show_metadata(sliced):
    client, made = sliced
    body = {"query": "reset dark screen", "k": 5, "filter": {"product": "phone"}}
    hits = client.post("/v1/search", json=body, headers=_as(made["admin"])).json()["results"]
    assert [h["source"] for h in hits] == ["phone.md"] and hits[0]["metadata"] == {"product": "phone", "plan": "free", "language": "en"}
    answer = client.post("/v1/ask", json={"question": "How do I reset a dark screen?", "filter": {"product": "tv"}},
                         headers=_as(made["admin"])).json()
    assert answer["citations"] and {c["source"] for c in answer["citations"]} == {"tv.md"}
    assert answer["citations"][0]["metadata"]["product"] == "tv"


@pytest.mark.parametrize("bad", [{"product": {"$regex": "t"}}, {"$or": "tv"}, {"version": {"$gt": "new"}}, "tv"])
def test_a_malformed_filter_is_a_422_naming_the_field(sliced, bad):
    client, made = sliced
    response = client.post("/v1/search", json={"query": "reset", "filter": bad}, headers=_as(made["admin"]))
    assert response.status_code == 422 and "body.filter" in [p["field"] for p in response.json()["detail"]]


CRAFTED = [None, {"product": "phone"}, {"$or": [{"product": "phone"}, {"product": {"$exists": True}}]},
           {"$not": {"product": "tv"}}, {"plan": {"$in": ["free", "business"]}}]


@pytest.mark.parametrize("crafted", CRAFTED)
def test_a_key_bound_to_a_slice_sees_no_byte_outside_it_whatever_filter_it_sends(sliced, crafted):
    client, made = sliced
    extra = {"filter": crafted} if crafted is not None else {}
    outside = [b"Phone reset", b"Reset the screen settings", b"\"free\""]   # the phone page's title, text, plan
    responses = [
        client.post("/v1/search", json={"query": "reset dark screen settings", "k": 10, **extra}, headers=_as(made["tv"])),
        client.post("/v1/ask", json={"question": "How do I reset the screen settings?", **extra}, headers=_as(made["tv"])),
        client.post("/v1/ask", json={"question": "How do I reset the screen settings?", "stream": True, **extra},
                    headers=_as(made["tv"])),
        client.post("/v1/chat/completions", json={"model": "kbqa-default", **extra, "messages": [
            {"role": "user", "content": "How do I reset the screen settings?"}]}, headers=_as(made["tv"])),
        client.get("/v1/collections/default/documents", headers=_as(made["tv_admin"])),
        client.get("/v1/collections/default/documents/phone.md", headers=_as(made["tv_admin"])),
    ]
    for n, response in enumerate(responses):
        assert response.status_code in (200, 404), response.text
        names = outside if n == len(responses) - 1 else outside + [b"phone.md"]   # the last one echoes the id asked
        assert not any(word in response.content for word in names), response.text[:300]
    assert b"tv.md" in responses[0].content or crafted is not None   # the slice itself is served


def test_a_key_bound_to_a_slice_cannot_write_or_report_across_documents(sliced):
    client, made = sliced
    headers = _as(made["tv_admin"])
    assert client.post("/v1/collections/default/documents", files=[("files", ("x.md", b"# X\n\nx", "text/markdown"))],
                       headers=headers).status_code == 403
    assert client.delete("/v1/collections/default/documents/phone.md", headers=headers).status_code == 403
    assert client.post("/v1/keys", json={"name": "x", "scope": "query"}, headers=headers).status_code == 403
    assert client.get("/v1/collections/default/documents/tv.md", headers=headers).status_code == 200


def test_keys_take_a_filter_over_the_api_and_the_cli(sliced, tmp_path, monkeypatch, capsys):
    client, made = sliced
    created = client.post("/v1/keys", json={"name": "plan-key", "scope": "query", "filter": {"plan": "free"}},
                          headers=_as(made["admin"]))
    assert created.status_code == 201
    hits = client.post("/v1/search", json={"query": "reset dark screen", "k": 10},
                       headers=_as(created.json()["key"])).json()["results"]
    assert {h["source"] for h in hits} == {"phone.md"}
    assert client.post("/v1/keys", json={"name": "bad", "scope": "query", "filter": {"a": {"$bad": 1}}},
                       headers=_as(made["admin"])).status_code == 422
    from serve.cli import main as kbqa_main

    monkeypatch.setenv("KBQA_HOME", str(tmp_path / "home"))
    assert kbqa_main(["keys", "create", "--name", "cli", "--scope", "query", "--filter", '{"product": "tv"}']) == 0
    capsys.readouterr()
    assert kbqa_main(["keys", "list"]) == 0 and 'filter={"product": "tv"}' in capsys.readouterr().out
    with pytest.raises(SystemExit):
        kbqa_main(["keys", "create", "--name", "bad", "--scope", "query", "--filter", '{"a": {"$bad": 1}}'])


def test_the_langchain_retriever_takes_search_kwargs_filter(tmp_path, fake_encoder):
    from serve.langchain import KbqaRetriever
    from tests.fakes import scripted_service

    service, _ = scripted_service(tmp_path, fake_encoder)
    kb = tmp_path / "products"
    kb.mkdir()
    (kb / "tv.md").write_bytes(TV_PAGE)
    (kb / "phone.md").write_bytes(PHONE_PAGE)
    service.ingest(kb, "default")
    retriever = KbqaRetriever(service=service, k=5, search_kwargs={"filter": {"product": "tv"}})
    docs = retriever.invoke("reset dark screen")
    assert {d.metadata["source"] for d in docs} == {"tv.md"} and docs[0].metadata["product"] == "tv"
    assert {d.metadata["source"] for d in retriever.invoke("reset dark screen", filter={"plan": "free"})} == {"phone.md"}


def test_an_upload_s_metadata_part_tags_its_files_and_a_metadata_change_embeds_nothing(sliced):
    client, made = sliced
    headers = _as(made["admin"])
    page = ("manual.md", b"# Soundbar\n\nPair the soundbar from the sound output menu.\n", "text/markdown")

    def send(metadata):
        return client.post("/v1/collections/default/documents", files=[("files", page)],
                           data={"metadata": json.dumps(metadata)}, headers=headers)

    first = send({"manual.md": {"product": "soundbar", "since": "2024-05-01", "plans": ["free", "pro"]}})
    assert first.status_code == 201 and first.json()["added"] == ["manual.md"]
    meta = client.get("/v1/collections/default/documents/manual.md", headers=headers).json()["metadata"]
    assert meta == {"product": "soundbar", "since": "2024-05-01", "plans": ["free", "pro"], "language": "en"}
    hits = client.post("/v1/search", json={"query": "pair soundbar", "filter": {"product": "soundbar"}},
                       headers=headers).json()["results"]
    assert [h["source"] for h in hits] == ["manual.md"]
    again = send({"manual.md": {"product": "speaker"}}).json()
    assert again["changed"] == ["manual.md"] and again["chunks_embedded"] == 0
    assert client.post("/v1/search", json={"query": "pair soundbar", "filter": {"product": "soundbar"}},
                       headers=headers).json()["results"] == []
    assert send({"other.md": {"a": 1}}).status_code == 422
    assert client.post("/v1/collections/default/documents", files=[("files", page)], data={"metadata": "[1]"},
                       headers=headers).status_code == 422


def test_a_folder_rule_gives_files_metadata_from_where_they_sit(tmp_path, fake_encoder):
    from ingest.path_metadata import PathRule

    assert PathRule("{product}/{version}").fields("tv/3.2/setup.md") == {"product": "tv", "version": "3.2"}
    assert PathRule("docs/{product}/*/{lang}").fields("docs/tv/x/en/a.md") == {"product": "tv", "lang": "en"}
    assert PathRule("docs/{product}").fields("blog/tv/a.md") == {} and PathRule("{p}/{v}").fields("tv/a.md") == {"p": "tv"}
    for bad in ("", "a//b", "{1x}", "plain/path"):
        with pytest.raises(ValueError):
            PathRule(bad)
    kb = tmp_path / "docs"
    for rel, text in (("tv/3.2/setup.md", "# Setup\n\nPair the remote with the TV.\n"),
                      ("phone/10/setup.md", "---\nproduct: galaxy\n---\n# Setup\n\nPair the phone with the watch.\n")):
        (kb / rel).parent.mkdir(parents=True, exist_ok=True)
        (kb / rel).write_text(text)
    collection = Collection(tmp_path / "home", fake_encoder, create=True)
    chunker = Chunker(fake_encoder.count_tokens, 50, 5)
    collection.ingest(kb, chunker, path_rule="{product}/{version}")
    docs = {d["doc_id"]: d["metadata"] for d in collection.store.documents()}
    assert docs["tv/3.2/setup.md"] == {"product": "tv", "version": "3.2", "language": "en"}
    # the file's own front matter wins
    assert docs["phone/10/setup.md"] == {"product": "galaxy", "version": "10", "language": "en"}
    again = collection.ingest(kb, chunker)   # the stored rule applies: nothing changed
    assert sorted(again.unchanged) == sorted(docs) and not again.changed
    renamed = collection.ingest(kb, chunker, path_rule="{line}")   # a new rule re-commits, re-embedding nothing
    assert sorted(renamed.changed) == sorted(docs) and renamed.chunks_embedded == 0
    assert {d["metadata"].get("line") for d in collection.store.documents()} == {"tv", "phone"}
    with pytest.raises(ValueError):
        collection.ingest(kb, chunker, path_rule="{oops")


def test_feedback_and_gaps_are_cut_to_a_bound_key_s_slice(sliced):
    client, made = sliced
    # the tv widget and an unbound admin each ask; both answers are rated unhelpful
    tv_answer = client.post("/v1/ask", json={"question": "How do I reset the picture settings?"},
                            headers=_as(made["tv"])).json()
    other = client.post("/v1/ask", json={"question": "What does the phone warranty cover?"},
                        headers=_as(made["admin"])).json()
    ids = {}
    for name, answer, key in (("tv", tv_answer, made["tv"]), ("other", other, made["admin"])):
        ids[name] = client.post("/v1/feedback", json={"answer_id": answer["answer_id"], "helpful": False},
                                headers=_as(key)).json()["feedback_id"]
    headers = _as(made["tv_admin"])   # an admin key bound to the same slice as the tv widget
    listed = client.get("/v1/feedback", headers=headers)
    assert listed.status_code == 200 and [f["feedback_id"] for f in listed.json()] == [ids["tv"]]
    assert b"warranty" not in listed.content
    assert len(client.get("/v1/feedback", headers=_as(made["admin"])).json()) == 2   # unbound: everything
    assert client.patch(f"/v1/feedback/{ids['other']}", json={"corrected_answer": "x"}, headers=headers).status_code == 404
    assert client.patch(f"/v1/feedback/{ids['tv']}", json={"corrected_answer": "Reset it."}, headers=headers).status_code == 200
    report = client.get("/v1/collections/default/gaps", headers=headers)
    assert report.status_code == 200 and report.json()["questions"] == 1
    assert b"warranty" not in report.content and b"phone" not in report.content.lower()


def test_a_metadata_only_change_touches_no_vector_and_no_term(tmp_path, fake_encoder):
    from ingest.chunker import Chunker as _Chunker

    collection = Collection(tmp_path / "c", fake_encoder, create=True)
    chunker = _Chunker(fake_encoder.count_tokens)
    kb = tmp_path / "kb"
    kb.mkdir()
    page = "---\nproduct: tv\n---\n# TV\n\nReset the picture settings to fix a dark screen.\n"
    (kb / "tv.md").write_text(page)
    (kb / "phone.md").write_text("# Phone\n\nReset the phone.\n")
    collection.ingest(kb, chunker)
    commits = []
    real = collection.generations.commit
    collection.generations.commit = lambda *args: commits.append(args[3:5]) or real(*args)
    (kb / "tv.md").write_text(page.replace("product: tv", "product: [tv, soundbar]"))
    report = collection.ingest(kb, chunker)
    assert report.changed == ["tv.md"] and report.chunks_embedded == 0
    assert commits == [([], [])]   # nothing removed from or added to FAISS and BM25
    hits = collection.search("reset picture settings", 5, filter={"product": "soundbar"})
    assert [h.chunk.source for h in hits] == ["tv.md"] and hits[0].metadata["product"] == ["tv", "soundbar"]
    (kb / "tv.md").write_text(page.replace("dark screen", "black screen"))   # the text changed: re-indexed
    collection.ingest(kb, chunker)
    assert commits[-1][0] and commits[-1][1]
    collection.close()
