"""API keys, scopes, collection bindings and rate limits, through the real app."""
import pytest
from fastapi.testclient import TestClient

from serve.app import create_app
from serve.auth import KeyStore
from serve.cli import main as kbqa_main
from serve.service import KbqaService
from serve.wiring import answer_pipeline
from serve.settings import Settings
from tests.fakes import ScriptedGenerator
from tests.fakes import make_kb


@pytest.fixture
def secured(tmp_path, fake_encoder):
    settings = Settings(home=tmp_path / "home", min_relevance=0.1, rate_limit_per_minute=5)
    service = KbqaService(settings, fake_encoder, answer_pipeline(settings, generator=ScriptedGenerator("Refunds are paid back within five days [1].")))
    service.ingest(make_kb(tmp_path / "kb"), "default")
    service.ingest(make_kb(tmp_path / "kb2"), "other")
    keys = KeyStore(tmp_path / "home" / "keys.sqlite")
    made = {"admin": keys.create("ops", "admin"), "query_a": keys.create("widget", "query", ["default"]),
            "admin_a": keys.create("team-a", "admin", ["default"])}
    with TestClient(create_app(settings, service)) as client:
        yield client, made, keys


def bearer(key):
    return {"Authorization": f"Bearer {key}"}


def test_no_or_wrong_key_is_401(secured):
    client, made, _ = secured
    assert client.post("/v1/search", json={"query": "refunds"}).status_code == 401
    wrong = client.post("/v1/search", json={"query": "refunds"}, headers=bearer(made["admin"][:-2] + "xx"))
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    assert client.post("/v1/search", json={"query": "refunds"}, headers={"X-API-Key": made["admin"]}).status_code == 200


def test_query_scope_cannot_administer(secured):
    client, made, _ = secured
    assert client.post("/v1/ask", json={"question": "refunds?"}, headers=bearer(made["query_a"])).status_code == 200
    assert client.get("/v1/collections", headers=bearer(made["query_a"])).status_code == 403
    assert client.post("/v1/collections", json={"name": "x"}, headers=bearer(made["query_a"])).status_code == 403


@pytest.mark.parametrize("method,path,body", [
    ("post", "/v1/search", {"query": "refunds", "collection": "other"}),
    ("post", "/v1/ask", {"question": "refunds?", "collection": "other"}),
    ("get", "/v1/collections/other/documents", None),
    ("get", "/v1/collections/other/documents/billing.md", None),
    ("delete", "/v1/collections/other/documents/billing.md", None),
    ("delete", "/v1/collections/other", None),
    ("post", "/v1/collections", {"name": "other2"}),
])
def test_a_key_bound_to_one_collection_is_refused_on_another(secured, method, path, body):
    client, made, _ = secured
    kwargs = {"json": body} if body is not None else {}
    response = getattr(client, method)(path, headers=bearer(made["admin_a"]), **kwargs)
    assert response.status_code in (403, 404)
    # ...and the unbound admin key can do it (the document still exists: nothing was deleted above)
    assert client.get("/v1/collections/other/documents/billing.md", headers=bearer(made["admin"])).status_code == 200


def test_bound_key_lists_only_its_collections_and_cannot_rate_other_answers(secured):
    client, made, _ = secured
    assert [c["collection"] for c in client.get("/v1/collections", headers=bearer(made["admin_a"])).json()] == ["default"]
    other = client.post("/v1/ask", json={"question": "refunds?", "collection": "other"}, headers=bearer(made["admin"]))
    answer_id = other.json()["answer_id"]
    assert client.post("/v1/feedback", json={"answer_id": answer_id, "helpful": True},
                       headers=bearer(made["query_a"])).status_code == 404
    assert client.post("/v1/feedback", json={"answer_id": answer_id, "helpful": True},
                       headers=bearer(made["admin"])).status_code == 201
    assert client.get("/v1/feedback", headers=bearer(made["admin_a"])).json() == []


def test_rate_limit_answers_429_with_retry_after(secured):
    client, made, _ = secured
    codes = [client.post("/v1/search", json={"query": "refunds"}, headers=bearer(made["admin"])).status_code
             for _ in range(6)]
    assert codes[:5] == [200] * 5 and codes[5] == 429
    limited = client.post("/v1/search", json={"query": "refunds"}, headers=bearer(made["admin"]))
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    # Another key has its own bucket.
    assert client.post("/v1/search", json={"query": "refunds"}, headers=bearer(made["query_a"])).status_code == 200


def test_revoked_key_is_refused(secured):
    client, made, keys = secured
    keys.revoke(made["query_a"].split("_")[1])
    assert client.post("/v1/search", json={"query": "refunds"}, headers=bearer(made["query_a"])).status_code == 401


def test_keys_cli_and_serve_refuses_public_host_without_keys(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("KBQA_HOME", str(tmp_path / "home"))
    assert kbqa_main(["serve", "--host", "0.0.0.0"]) == 2
    assert "no API keys" in capsys.readouterr().err
    assert kbqa_main(["keys", "create", "--name", "w", "--scope", "query", "--collection", "default"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("kbqa_")
    assert kbqa_main(["keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert "w  query  collections=default" in listing and key not in listing
    assert kbqa_main(["keys", "revoke", "nope"]) == 2


def test_keys_over_the_api_need_an_unbound_admin_key(secured):
    client, made, _ = secured
    created = client.post("/v1/keys", json={"name": "bot", "scope": "query", "collections": ["other"]},
                          headers=bearer(made["admin"]))
    assert created.status_code == 201
    new_key, key_id = created.json()["key"], created.json()["key_id"]
    assert client.post("/v1/search", json={"query": "refunds", "collection": "other"},
                       headers=bearer(new_key)).status_code == 200
    assert client.post("/v1/search", json={"query": "refunds"}, headers=bearer(new_key)).status_code == 403
    listed = client.get("/v1/keys", headers=bearer(made["admin"])).json()
    assert {k["key_id"] for k in listed} >= {key_id} and all("hash" not in str(k) for k in listed)
    assert client.post("/v1/keys", json={"name": "x", "scope": "admin"}, headers=bearer(made["admin_a"])).status_code == 403
    assert client.post("/v1/keys", json={"name": "x", "scope": "admin"}, headers=bearer(made["query_a"])).status_code == 403
    assert client.delete(f"/v1/keys/{key_id}", headers=bearer(made["admin"])).status_code == 204
    assert client.post("/v1/search", json={"query": "refunds", "collection": "other"},
                       headers=bearer(new_key)).status_code == 401
    assert client.delete("/v1/keys/nope", headers=bearer(made["admin"])).status_code == 404


def test_revoking_every_key_closes_the_server_instead_of_opening_it(secured, tmp_path):
    # Issue 13, 1: with the last key revoked, the server used to grant everything to everyone.
    client, made, keys = secured
    for key in made.values():
        keys.revoke(key.split("_")[1])
    assert client.get("/v1/keys").status_code == 401
    assert client.get("/v1/collections", headers=bearer(made["admin"])).status_code == 401
    assert client.post("/v1/keys", json={"name": "intruder", "scope": "admin"}).status_code == 401
    assert client.post("/v1/search", json={"query": "refunds", "collection": "other"},
                       headers=bearer(made["query_a"])).status_code == 401
    # Recovery, as documented: `kbqa keys create` on the server's machine (the same key store); the running server
    # accepts the new key at once.
    fresh = keys.create("ops", "admin")
    assert client.get("/v1/keys", headers=bearer(fresh)).status_code == 200


def _keyless_app(tmp_path, fake_encoder):
    settings = Settings(home=tmp_path / "home", min_relevance=0.1)
    service = KbqaService(settings, fake_encoder, answer_pipeline(settings, generator=ScriptedGenerator("Refunds are paid back within five days [1].")))
    service.ingest(make_kb(tmp_path / "kb"), "default")
    return create_app(settings, service)


@pytest.mark.parametrize("address", [("10.0.0.5", 40000), ("203.0.113.9", 1), ("testclient", 50000)])
def test_keyless_mode_refuses_every_client_beyond_loopback(tmp_path, fake_encoder, address):
    # Issue 13, 2: `uvicorn --factory serve.app:create_app --host 0.0.0.0` with no key answered anyone.
    with TestClient(_keyless_app(tmp_path, fake_encoder), client=address) as client:
        for response in (client.get("/v1/keys"), client.post("/v1/search", json={"query": "refunds"}),
                         client.post("/v1/keys", json={"name": "x", "scope": "admin"})):
            assert response.status_code == 403 and "kbqa keys create" in response.json()["error"]


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1"])
def test_keyless_mode_serves_loopback_until_the_first_key_exists(tmp_path, fake_encoder, host):
    with TestClient(_keyless_app(tmp_path, fake_encoder), client=(host, 50000)) as client:
        assert client.post("/v1/search", json={"query": "refunds"}).status_code == 200
        created = client.post("/v1/keys", json={"name": "ops", "scope": "admin"})
        assert created.status_code == 201
        # From now on a key is needed, and revoking it never brings keyless mode back.
        assert client.post("/v1/search", json={"query": "refunds"}).status_code == 401
        key = created.json()["key"]
        assert client.post("/v1/search", json={"query": "refunds"}, headers=bearer(key)).status_code == 200
        assert client.delete(f"/v1/keys/{key.split('_')[1]}", headers=bearer(key)).status_code == 204
        assert client.post("/v1/search", json={"query": "refunds"}).status_code == 401
    with TestClient(_keyless_app(tmp_path / "again", fake_encoder), client=(host, 50000)) as client:
        assert client.get("/v1/keys").status_code == 200   # a fresh home: keyless, loopback


def test_probes_need_no_key_and_name_no_collection_but_metrics_need_an_admin_key(secured):
    # Issue 13, 7: /healthz and /metrics named every collection (and vector counts) without a key.
    client, made, _ = secured
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and "default" not in ready.text
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", headers=bearer(made["query_a"])).status_code == 403
    scraped = client.get("/metrics", headers=bearer(made["admin"]))
    assert scraped.status_code == 200 and 'kbqa_index_vectors{collection="default"}' in scraped.text


def test_key_guessing_is_rate_limited_per_client_address(tmp_path, fake_encoder):
    # Issue 13, 7: 300 wrong guesses got 300 x 401.
    settings = Settings(home=tmp_path / "home", min_relevance=0.1, auth_failures_per_minute=5)
    service = KbqaService(settings, fake_encoder, answer_pipeline(settings, generator=ScriptedGenerator("Refunds are paid back within five days [1].")))
    service.ingest(make_kb(tmp_path / "kb"), "default")
    good = KeyStore(tmp_path / "home" / "keys.sqlite").create("ops", "admin")
    app = create_app(settings, service)
    with TestClient(app, client=("198.51.100.7", 1)) as guesser, TestClient(app, client=("198.51.100.8", 1)) as other:
        statuses = [guesser.get("/v1/keys", headers=bearer(f"kbqa_{n:012x}_guess")).status_code for n in range(8)]
        assert statuses[:5] == [401] * 5 and statuses[5:] == [429] * 3
        limited = guesser.get("/v1/keys", headers=bearer("kbqa_000000000000_guess"))
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert guesser.get("/v1/keys", headers=bearer(good)).status_code == 200   # a right key is never refused
        assert other.get("/v1/keys").status_code == 401                          # another address has its own budget


def test_a_conversation_belongs_to_the_key_and_collection_that_wrote_it(secured):
    # Issue 30, 5: a key bound to A that sent B's conversation_id got B's "repeated failure" hand-off.
    client, made, keys = secured
    key_b = keys.create("tenant-b", "query", ["other"])

    def ask(key, collection, conversation):
        response = client.post("/v1/ask", json={"question": "How are refunds paid?", "collection": collection,
                                                "conversation_id": conversation}, headers=bearer(key))
        assert response.status_code == 200, response.text
        return response.json()

    first = ask(key_b, "other", "support-1")
    assert client.post("/v1/feedback", json={"answer_id": first["answer_id"], "helpful": False},
                       headers=bearer(key_b)).status_code == 201
    assert ask(key_b, "other", "support-1")["handoff"]["reason"] == "repeated failure"   # its own conversation
    assert ask(made["query_a"], "default", "support-1")["handoff"]["reason"] != "repeated failure"
    assert ask(made["admin"], "other", "support-1")["handoff"]["reason"] != "repeated failure"   # another key's


def test_metrics_name_every_collection_so_a_bound_admin_key_gets_403(secured):
    client, made, _ = secured
    refused = client.get("/metrics", headers=bearer(made["admin_a"]))
    assert refused.status_code == 403 and "other" not in refused.text
    assert 'collection="other"' in client.get("/metrics", headers=bearer(made["admin"])).text
