"""A fuzzed-filter run against a key bound to a slice (issue 28's target: 0 requests answered outside it). Hypothesis
writes filters from the whole language ($and/$or/$not, every operator, the slice's own field and others, values
of every type) and a key bound to {"product": "tv"} sends each on search, ask and chat completions: no byte of the
phone page may come back, whatever the filter, and a filter the language refuses is a 422, never a 500."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

TV_PAGE = b"---\nproduct: tv\nplan: business\nversion: 3.2\n---\n# TV reset\n\nReset the picture settings to fix a dark screen.\n"
PHONE_PAGE = (b"---\nproduct: phone\nplan: free\nversion: 10\n---\n# Phone reset\n\n"
              b"Reset the screen settings to fix a dark screen.\n")
OUTSIDE = (b"Phone reset", b"Reset the screen settings", b"phone.md", b"\"free\"")

FIELDS = st.sampled_from(["product", "plan", "version", "region", "$where", "a b"])
VALUES = st.one_of(st.sampled_from(["tv", "phone", "free", "business"]), st.integers(-5, 20),
                   st.floats(allow_nan=False, allow_infinity=False, width=32), st.booleans(), st.none(),
                   st.lists(st.sampled_from(["tv", "phone", "free"]), max_size=3))
OPERATORS = st.sampled_from(["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$regex"])
LEAF = st.one_of(st.dictionaries(FIELDS, VALUES, min_size=1, max_size=2),
                 st.builds(lambda f, op, v: {f: {op: v}}, FIELDS, OPERATORS, VALUES))
FILTERS = st.recursive(LEAF, lambda inner: st.one_of(
    st.builds(lambda xs: {"$or": xs}, st.lists(inner, min_size=1, max_size=3)),
    st.builds(lambda xs: {"$and": xs}, st.lists(inner, min_size=1, max_size=3)),
    st.builds(lambda x: {"$not": x}, inner)), max_leaves=6)


@pytest.fixture(scope="module")
def bound(tmp_path_factory):
    from fastapi.testclient import TestClient

    from serve.app import create_app
    from serve.auth import KeyStore
    from tests.fakes import FakeEncoder, scripted_service

    tmp_path = tmp_path_factory.mktemp("fuzz")
    service, _ = scripted_service(tmp_path, FakeEncoder(), rate_limit_per_minute=0)
    kb = tmp_path / "products"
    kb.mkdir()
    (kb / "tv.md").write_bytes(TV_PAGE)
    (kb / "phone.md").write_bytes(PHONE_PAGE)
    service.ingest(kb, "default")
    key = KeyStore(tmp_path / "home" / "keys.sqlite").create("tv-widget", "query", None, {"product": "tv"})
    with TestClient(create_app(service.settings, service)) as client:
        yield client, {"Authorization": f"Bearer {key}"}


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(crafted=FILTERS, route=st.sampled_from(["search", "ask", "chat"]))
def test_no_fuzzed_filter_reaches_outside_a_bound_key_s_slice(bound, crafted, route):
    client, headers = bound
    question = "How do I reset the screen settings of a dark screen?"
    if route == "search":
        response = client.post("/v1/search", json={"query": question, "k": 10, "filter": crafted}, headers=headers)
    elif route == "ask":
        response = client.post("/v1/ask", json={"question": question, "filter": crafted}, headers=headers)
    else:
        response = client.post("/v1/chat/completions", json={"model": "kbqa-default", "filter": crafted, "messages": [
            {"role": "user", "content": question}]}, headers=headers)
    assert response.status_code in (200, 400, 422), (crafted, response.status_code, response.text[:300])
    assert not any(word in response.content for word in OUTSIDE), (crafted, response.text[:300])
