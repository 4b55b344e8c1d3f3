"""The customer in the request (issue 28, item 4): a collection's customer rules turn a customer's product, plan or
version into hard filters or preferences; conversations are kept server-side per key; the hand-off webhook and
the gaps report carry the customer context."""
from __future__ import annotations

import json

import pytest

from serve.customer import RulesError, check_rules, preferred, scope_of
from retrieval.filters import compile_filter

TV_PAGE = b"---\nproduct: tv\nplan: business\n---\n# TV reset\n\nReset the picture settings to fix a dark screen.\n"
PHONE_PAGE = b"---\nproduct: phone\nplan: free\n---\n# Phone reset\n\nReset the screen settings to fix a dark screen.\n"
GENERAL_PAGE = b"# Dark screens\n\nA dark screen after a reset usually needs the settings reset once more.\n"
RULES = {"product": {"metadata": "product", "use": "filter"}, "plan": {"metadata": "plan", "use": "prefer"}}


def test_rules_are_checked_and_name_what_is_wrong():
    assert check_rules({"product": {}}) == {"product": {"metadata": "product", "use": "filter"}}
    for bad, words in [({"product": {"use": "boost"}}, "use must be"), ([], "JSON object"),
                       ({"a b": {}}, "field name"), ({"plan": {"metadata": "p", "weight": 2}}, "expected"),
                       ({f"f{i}": {} for i in range(21)}, "at most 20")]:
        with pytest.raises(RulesError, match=words):
            check_rules(bad)


def test_a_filter_rule_keeps_the_customer_s_documents_and_the_untagged_ones():
    scope = scope_of({"product": "tv", "plan": "business", "locale": "de", "id": "c-1"}, check_rules(RULES))
    keeps = compile_filter(scope.filter)
    assert keeps({"product": "tv"}) and keeps({}) and not keeps({"product": "phone"})
    assert scope.prefer == {"plan": "business"}
    assert scope.context() == {"used": {"product": {"metadata": "product", "use": "filter", "value": "tv"},
                                        "plan": {"metadata": "plan", "use": "prefer", "value": "business"}},
                               "ignored": ["locale"]}   # no rule maps it; the id is never a filter
    several = compile_filter(scope_of({"fields": {"product": ["tv", "soundbar"]}}, RULES).filter)
    assert several({"product": "soundbar"}) and not several({"product": "phone"})
    assert scope_of(None, RULES).filter is None and scope_of(None, RULES).context() is None
    assert scope_of({"product": "tv"}, {}).context() == {"used": {}, "ignored": ["product"]}


class _Hit:
    def __init__(self, name, score, metadata):
        self.name, self.score, self.metadata = name, score, metadata


def test_a_preference_moves_matching_hits_up_only_past_close_ones():
    hits = [_Hit("a", 1.0, {"plan": "free"}), _Hit("b", 0.8, {"plan": ["business", "pro"]}),
            _Hit("c", 0.5, {"plan": "business"}), _Hit("d", 0.4, {})]
    assert [h.name for h in preferred(hits, {"plan": "business"}, 3)] == ["b", "a", "c"]   # 0.8 x 1.5 > 1.0 > 0.75
    assert [h.name for h in preferred(hits, {}, 2)] == ["a", "b"]


@pytest.fixture
def kb_client(tmp_path, fake_encoder):
    from fastapi.testclient import TestClient

    from serve.app import create_app
    from serve.auth import KeyStore
    from tests.fakes import scripted_service

    service, _ = scripted_service(tmp_path, fake_encoder, rate_limit_per_minute=0)
    kb = tmp_path / "products"
    kb.mkdir()
    for name, page in (("tv.md", TV_PAGE), ("phone.md", PHONE_PAGE), ("general.md", GENERAL_PAGE)):
        (kb / name).write_bytes(page)
    service.ingest(kb, "default")
    keys = KeyStore(tmp_path / "home" / "keys.sqlite")
    made = {"admin": keys.create("ops", "admin"), "widget": keys.create("widget", "query"),
            "other": keys.create("other-widget", "query"), "tv_admin": keys.create("tv", "admin", None, {"product": "tv"})}
    with TestClient(create_app(service.settings, service)) as client:
        yield client, made, service


def _as(key):
    return {"Authorization": f"Bearer {key}"}


QUESTION = "How do I reset the screen settings for a dark screen?"


def test_customer_rules_over_the_api_scope_ask_and_the_answer_says_so(kb_client):
    client, made, _ = kb_client
    url = "/v1/collections/default/customer-rules"
    assert client.get(url, headers=_as(made["admin"])).json() == {"rules": {}}
    assert client.put(url, json={"rules": {"product": {"use": "boost"}}}, headers=_as(made["admin"])).status_code == 422
    assert client.put(url, json={"rules": RULES}, headers=_as(made["tv_admin"])).status_code == 403   # a sliced key
    assert client.put(url, json={"rules": RULES}, headers=_as(made["admin"])).json() == {"rules": RULES}
    without = client.post("/v1/ask", json={"question": QUESTION}, headers=_as(made["widget"])).json()
    assert without["context"] is None and without["citations"][0]["source"] == "phone.md"   # the closest page
    asked = client.post("/v1/ask", json={"question": QUESTION, "k": 5, "customer": {"product": "tv", "plan": "business",
                                                                                 "locale": "de"}},
                        headers=_as(made["widget"])).json()
    assert asked["citations"] and {c["source"] for c in asked["citations"]} <= {"tv.md", "general.md"}
    assert asked["context"]["used"]["product"] == {"metadata": "product", "use": "filter", "value": "tv"}
    assert asked["context"]["ignored"] == ["locale"]
    streamed = client.post("/v1/ask", json={"question": QUESTION, "stream": True, "customer": {"product": "phone"}},
                           headers=_as(made["widget"])).text
    final = json.loads(streamed.split("event: final\ndata: ")[1].split("\n")[0])
    assert {c["source"] for c in final["citations"]} <= {"phone.md", "general.md"} and final["context"]["used"]
    chat = client.post("/v1/chat/completions", json={"model": "kbqa-default", "customer": {"product": "tv"},
                                                     "messages": [{"role": "user", "content": QUESTION}]},
                       headers=_as(made["widget"])).json()
    assert chat["kbqa"]["context"]["used"]["product"]["value"] == "tv"
    assert not any(c["source"] == "phone.md" for c in chat["kbqa"]["citations"])
    bad = client.post("/v1/ask", json={"question": QUESTION, "customer": {"plan": {"nested": 1}}},
                      headers=_as(made["widget"]))
    assert bad.status_code == 422


def test_a_conversation_is_kept_per_key_and_a_follow_up_needs_no_history(kb_client):
    client, made, service = kb_client
    service.collection("default").set_customer_rules(RULES)
    first = client.post("/v1/ask", json={"question": "How do I fix a dark screen on the picture settings?",
                                         "conversation_id": "c-42", "customer": {"product": "tv"}},
                        headers=_as(made["widget"])).json()
    assert first["context"]["used"]["product"]["value"] == "tv"
    follow = client.post("/v1/ask", json={"question": "and what about it?", "conversation_id": "c-42"},
                         headers=_as(made["widget"])).json()
    assert follow["rewritten_question"] and "dark" in follow["rewritten_question"]   # the kept turn was read
    assert follow["context"]["used"]["product"]["value"] == "tv"                     # and its customer
    stranger = client.post("/v1/ask", json={"question": "and what about it?", "conversation_id": "c-42"},
                           headers=_as(made["other"])).json()
    assert stranger["rewritten_question"] is None and stranger["context"] is None   # another key's conversation


def test_conversations_expire_and_keep_only_the_last_turns(tmp_path):
    from retrieval.answering.records import Answer
    from serve.feedback import FeedbackStore

    store = FeedbackStore(tmp_path / "feedback.sqlite")
    for n in range(5):
        store.record_answer("default", Answer(f"question {n}?", f"answer {n}", False, answer_id=f"{n:032x}"), "c",
                            "key", {"plan": "pro"} if n == 1 else None)
    history, customer = store.conversation("c", "default", "key", since=0.0, turns=2)
    assert [m["content"] for m in history] == ["question 3?", "answer 3", "question 4?", "answer 4"]
    assert customer is None   # the customer of turn 1 is older than the turns read
    assert store.conversation("c", "default", "key", since=0.0, turns=5)[1] == {"plan": "pro"}
    assert store.conversation("c", "default", "key", since=9e12, turns=5) == ([], None)   # expired
    assert store.conversation("c", "other", "key", since=0.0, turns=5) == ([], None)
    store.close()


def test_the_gaps_report_and_the_hand_off_carry_the_customer_context(tmp_path, fake_encoder):
    from retrieval.answering.records import Answer, Handoff
    from serve.gaps import customer_counts, gap_report

    from tests.fakes import scripted_service

    service, _ = scripted_service(tmp_path, fake_encoder)
    for n, customer in enumerate([{"plan": "pro", "product": "tv", "id": "c-1"}, {"plan": "free"}, None]):
        service.feedback.record_answer("default", Answer("Can I pay by bank transfer?", "I don't know.", True,
                                                         answer_id=f"{n:032x}"), None, None, customer)
    report = gap_report(service, "default", check_coverage=False)
    assert report["clusters"][0]["customers"] == {"plan": {"pro": 1, "free": 1}, "product": {"tv": 1}}
    assert customer_counts([{"customer": {"fields": {"tags": ["a", "b"]}}}]) == {"tags": {"a": 1, "b": 1}}

    sent = []
    service.handoff_webhook = type("Recorder", (), {"submit": lambda self, payload: sent.append(payload),
                                                    "close": lambda self: None})()
    answer = Answer("I want a person", "I don't know.", True, answer_id="f" * 32, handoff=Handoff(True, "asks for a person"),
                    context={"used": {}, "ignored": ["plan"]})
    service._record(answer, "default", [], "c-1", None, {"plan": "pro"})
    assert sent[0]["customer"] == {"plan": "pro"} and sent[0]["context"] == {"used": {}, "ignored": ["plan"]}
    service.close()
