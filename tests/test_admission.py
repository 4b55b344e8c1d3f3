"""Admission control (serve/admission.py): a bounded number of answers at once, a bounded queue, 503 + Retry-After."""
import threading
import time

import httpx
import pytest

from serve.admission import AdmissionGate, Overloaded
from serve.app import create_app
from tests.fakes import ScriptedGenerator, scripted_service, serving


def test_a_free_slot_admits_at_once_and_a_full_queue_refuses_at_once():
    gate = AdmissionGate(slots=1, queue=1, max_wait_s=5)
    first = gate.enter()
    waiter_got = []
    waiter = threading.Thread(target=lambda: waiter_got.append(gate.enter()))
    waiter.start()
    while gate.waiting == 0:
        time.sleep(0.01)
    start = time.perf_counter()
    with pytest.raises(Overloaded) as refused:
        gate.enter()                     # one holds the slot, one waits: the queue of one is full
    assert time.perf_counter() - start < 0.5 and refused.value.retry_after >= 1
    first.release()
    waiter.join(5)
    assert len(waiter_got) == 1 and gate.active == 1 and gate.waiting == 0
    waiter_got[0].release()
    waiter_got[0].release()              # idempotent: the slot is not freed twice
    assert gate.active == 0 and gate.rejected == 1
    with gate.enter():                   # the slot is whole again: usable as a context manager
        assert gate.active == 1
    assert gate.active == 0


def test_a_waiter_that_finds_no_slot_in_time_is_refused():
    gate = AdmissionGate(slots=1, queue=4, max_wait_s=0.2)
    gate._recent.append(0.01)            # answers look fast: it is let into the queue
    held = gate.enter()
    start = time.perf_counter()
    with pytest.raises(Overloaded, match="no slot within"):
        gate.enter()
    assert 0.15 < time.perf_counter() - start < 2
    held.release()
    assert gate.waiting == 0 and gate.active == 0


def test_an_expected_wait_over_the_limit_is_refused_without_waiting():
    gate = AdmissionGate(slots=2, queue=16, max_wait_s=3)
    gate._recent.extend([4.0, 4.0, 4.0])  # answers take 4 s: one more in the queue would wait 2 s, two would wait 4 s
    a, b = gate.enter(), gate.enter()
    waiter = threading.Thread(target=lambda: gate.enter().release())
    waiter.start()
    while gate.waiting == 0:
        time.sleep(0.01)
    start = time.perf_counter()
    with pytest.raises(Overloaded, match="expected wait") as refused:
        gate.enter()
    assert time.perf_counter() - start < 0.5
    assert refused.value.retry_after == 4   # (1 ahead + itself) x 4 s over 2 slots
    a.release()
    waiter.join(5)
    b.release()
    assert gate.active == 0 and gate.waiting == 0


def test_settings_choose_slots_by_who_writes_the_answer(tmp_path):
    from serve.settings import Settings

    assert Settings(home=tmp_path, answer_mode="generate").resolved_answer_slots == 1
    assert Settings(home=tmp_path, generator_url="http://x:1/v1", generator_model="m").resolved_answer_slots == 8
    assert Settings(home=tmp_path, answer_mode="select").resolved_answer_slots >= 1
    assert Settings(home=tmp_path, answer_slots=3).resolved_answer_slots == 3
    with pytest.raises(ValueError):
        Settings(home=tmp_path, answer_queue=1000)


class GatedGenerator(ScriptedGenerator):
    """Writes its answer only when the test opens the gate: the answer holds its slot until then."""

    def __init__(self, text):
        super().__init__(text)
        self.started, self.go = threading.Event(), threading.Event()

    def stream(self, messages, stats=None):
        self.started.set()
        assert self.go.wait(20)
        yield from super().stream(messages, stats)


@pytest.fixture
def gated_app(tmp_path, fake_encoder):
    service, _ = scripted_service(tmp_path, fake_encoder, answer_mode="generate", answer_slots=1, answer_queue=0,
                                  answer_max_wait_s=5)
    generator = GatedGenerator("Refunds are paid back within five days [1].")
    service.pipeline.writer.generator = generator
    app = create_app(service.settings, service)
    with serving(app) as url:
        yield app, url, generator
        generator.go.set()               # a failed test must not leave an answer blocked


def _in_thread(fn):
    out = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    return thread, out


@pytest.mark.parametrize("route", ["/v1/ask", "/v1/chat/completions"])
def test_a_busy_server_answers_503_with_retry_after_and_serves_the_admitted_one(gated_app, route):
    app, url, generator = gated_app
    body = ({"question": "When are refunds paid?"} if route == "/v1/ask" else
            {"model": "kbqa-default", "messages": [{"role": "user", "content": "When are refunds paid?"}]})
    first, got = _in_thread(lambda: httpx.post(url + route, json=body, timeout=30))
    assert generator.started.wait(10)
    refused = httpx.post(url + route, json=body, timeout=30)
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
    error = refused.json()["error"]
    assert "capacity" in (error if route == "/v1/ask" else error["message"])
    if route != "/v1/ask":                # OpenAI's error shape on the OpenAI route
        assert error["type"] == "server_error" and error["detail"]["retry_after_s"] >= 1
    generator.go.set()
    first.join(20)
    assert got[0].status_code == 200
    assert app.state.admission.active == 0 and app.state.admission.rejected == 1
    metrics = httpx.get(url + "/metrics").text
    assert "kbqa_answers_rejected_total 1.0" in metrics


def _streamed_ask(url):
    return httpx.stream("POST", url + "/v1/ask", json={"question": "When are refunds paid?", "stream": True}, timeout=30)


def _slots_freed(gate, within_s: float = 10) -> bool:
    deadline = time.monotonic() + within_s
    while gate.active and time.monotonic() < deadline:
        time.sleep(0.01)
    return gate.active == 0


def test_a_stream_holds_its_slot_until_it_ends(gated_app):
    app, url, generator = gated_app
    with _streamed_ask(url) as response:
        assert response.status_code == 200 and generator.started.wait(10)
        assert app.state.admission.active == 1     # the answer is being written: the slot is held
        generator.go.set()
        events = response.read().decode()
    assert "event: final" in events
    assert _slots_freed(app.state.admission)
    assert httpx.post(url + "/v1/ask", json={"question": "When are refunds paid?"}, timeout=30).status_code == 200


def test_a_client_that_leaves_mid_stream_frees_its_slot(gated_app):
    app, url, generator = gated_app
    with _streamed_ask(url) as response:
        assert response.status_code == 200 and generator.started.wait(10)
    generator.go.set()                   # the client is gone; the answer finishes and the slot comes back
    assert _slots_freed(app.state.admission)


@pytest.mark.parametrize("slots, expected", [(None, 4), (2, 2)])
def test_a_batching_generator_sets_the_slots_unless_they_are_set(tmp_path, fake_encoder, slots, expected):
    service, _ = scripted_service(tmp_path, fake_encoder, answer_mode="generate", answer_slots=slots)
    service.pipeline.writer.generator.max_batch = 4    # as the embedded generator on a GPU
    app = create_app(service.settings, service)
    with serving(app):
        assert app.state.admission.slots == expected
