"""Hand-off to a person (issue 17, 1): the recommendation on every answer, and the signed webhook that carries it
to a help desk, against a real local HTTP receiver."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from retrieval.answering.prompt import ABSTENTION
from serve.app import create_app
from retrieval.answering.handoff import HandoffPolicy, customer_signal
from serve.handoff_webhook import HandoffWebhook, sign, verify_signature
from serve.service import KbqaService
from serve.wiring import answer_pipeline
from serve.settings import Settings
from tests.fakes import ScriptedGenerator, local_client, make_kb

SECRET = "s3cret"


class Receiver:
    """A help desk's webhook endpoint: answers each POST with the next status of ``statuses`` (then 200); while
    ``gate`` is clear it holds every request (a stalled help desk)."""

    def __init__(self, statuses=()):
        self.statuses, self.received, self.gate = list(statuses), [], threading.Event()
        self.gate.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.gate.wait(10)
                receiver.received.append((dict(self.headers), body))
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hooks/kbqa"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    running = Receiver()
    yield running
    running.close()


@pytest.mark.parametrize("message,signal", [
    ("Can I talk to a human please?", "asks for a person"), ("transfer me to customer service", "asks for a person"),
    ("This is useless, it still doesn't work", "frustration"), ("WHY IS MY DASHBOARD EMPTY", "frustration"),
    ("How do I add another person to my team?", None), ("How do I cancel my subscription?", None)])
def test_customer_signal(message, signal):
    assert customer_signal(message) == signal


def test_policy_reasons_in_order():
    policy = HandoffPolicy(min_answerability=0.5)
    assert policy.decide("get me an agent", [], False, 0.9).reason == "asks for a person"
    assert policy.decide("this is ridiculous", [], True, 0.9).reason == "frustration"
    assert policy.decide("How long do refunds take?", [], True, 0.9).reason == "abstained"
    assert policy.decide("How long do refunds take?", [], False, 0.4).reason == "low confidence"
    earlier = [{"role": "user", "content": "x"}, {"role": "assistant", "content": ABSTENTION}]
    assert policy.decide("How long do refunds take?", earlier, False, 0.9).reason == "repeated failure"
    assert policy.decide("How long do refunds take?", [], False, 0.9, rated_unhelpful=True).reason == "repeated failure"
    assert policy.decide("How long do refunds take?", [], False, 0.9).to_dict() == {"recommended": False, "reason": None}
    assert policy.decide("How long do refunds take?", [], False, None).recommended is False


def _client(tmp_path, encoder, **settings):
    settings = Settings(home=tmp_path / "home", min_relevance=0.1, **settings)
    service = KbqaService(settings, encoder, answer_pipeline(settings, generator=ScriptedGenerator("Refunds are paid back within five days [1].")))
    service.ingest(make_kb(tmp_path / "kb"), "default")
    return local_client(create_app(settings, service)), service


def test_every_answer_carries_the_recommendation_and_a_bad_rating_carries_over(tmp_path, fake_encoder):
    client, _ = _client(tmp_path, fake_encoder)
    with client:
        plain = client.post("/v1/ask", json={"question": "How are refunds paid back?", "conversation_id": "c-1"}).json()
        assert plain["handoff"] == {"recommended": False, "reason": None}
        person = client.post("/v1/ask", json={"question": "refunds: I want to talk to a real person"}).json()
        assert person["handoff"] == {"recommended": True, "reason": "asks for a person"} and not person["abstained"]
        assert client.post("/v1/feedback", json={"answer_id": plain["answer_id"], "helpful": False}).status_code == 201
        again = client.post("/v1/ask", json={"question": "How are refunds paid back?", "conversation_id": "c-1"}).json()
        assert again["handoff"]["reason"] == "repeated failure"
        other = client.post("/v1/ask", json={"question": "How are refunds paid back?", "conversation_id": "c-2"}).json()
        assert other["handoff"]["recommended"] is False
        with client.stream("POST", "/v1/ask", json={"question": "get me an agent about refunds", "stream": True}) as r:
            final = "".join(r.iter_text()).strip().split("\n\n")[-1]
        assert json.loads(final.split("\n", 1)[1].removeprefix("data: "))["handoff"]["reason"] == "asks for a person"
        assert client.post("/v1/ask", json={"question": "x", "conversation_id": "bad id!"}).status_code == 422


def test_a_recommended_handoff_is_posted_signed(tmp_path, fake_encoder, receiver):
    client, service = _client(tmp_path, fake_encoder, handoff_webhook=receiver.url, handoff_secret=SECRET)
    with client:
        history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello."}]
        answer = client.post("/v1/ask", json={"question": "refunds? let me speak to a human", "history": history,
                                              "conversation_id": "c-9"}).json()
        client.post("/v1/ask", json={"question": "How are refunds paid back?"})   # no hand-off: nothing posted
        assert service.handoff_webhook.drain()
    assert len(receiver.received) == 1
    headers, body = receiver.received[0]
    assert verify_signature(SECRET, headers["X-Kbqa-Timestamp"], body, headers["X-Kbqa-Signature"])
    assert not verify_signature("wrong", headers["X-Kbqa-Timestamp"], body, headers["X-Kbqa-Signature"])
    sent = json.loads(body)
    assert sent["event"] == "handoff" and sent["reason"] == "asks for a person" and sent["conversation_id"] == "c-9"
    assert sent["answer_id"] == answer["answer_id"] and sent["history"] == history
    assert sent["answer"] == answer["answer"] and sent["citations"][0]["source"] == "billing.md"
    assert headers["X-Kbqa-Delivery"] == sent["delivery_id"]


def test_failures_are_retried_and_a_refusal_is_not():
    flaky = Receiver(statuses=[500, 503])
    webhook = HandoffWebhook(flaky.url, SECRET, backoff_s=0.01)
    webhook.submit({"reason": "abstained"})
    assert webhook.drain() and len(flaky.received) == 3 and webhook.counts["delivered"] == 1
    flaky.statuses = [400]
    webhook.submit({"reason": "abstained"})
    assert webhook.drain() and len(flaky.received) == 4 and webhook.counts["failed"] == 1
    webhook.close()
    flaky.close()
    gone = HandoffWebhook(flaky.url, SECRET, attempts=2, backoff_s=0.01)   # the receiver is down: refused
    gone.submit({"reason": "abstained"})
    assert gone.drain() and gone.counts["failed"] == 1 and gone.counts["retried"] == 1
    gone.close()


def test_a_stalled_webhook_neither_delays_nor_breaks_answers(tmp_path, fake_encoder, receiver):
    receiver.gate.clear()   # the help desk holds every request
    client, service = _client(tmp_path, fake_encoder, handoff_webhook=receiver.url, handoff_secret=SECRET)
    service.handoff_webhook.queue.maxsize = 1
    with client:
        statuses = [client.post("/v1/ask", json={"question": "I want a human about refunds"}).status_code
                    for _ in range(4)]   # answered while the first delivery is still held
        assert statuses == [200] * 4 and service.handoff_webhook.counts["dropped"] >= 1
        receiver.gate.set()
        assert service.handoff_webhook.drain()


def test_a_webhook_needs_a_secret(tmp_path):
    with pytest.raises(ValueError, match="KBQA_HANDOFF_SECRET"):
        Settings(home=tmp_path, handoff_webhook="http://127.0.0.1:9/x")
    assert sign("k", "1", b"{}") != sign("k", "2", b"{}")
