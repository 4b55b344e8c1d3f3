"""Bring your own generator (issue 15, 1): kbqa's grounding around a remote OpenAI-compatible server, and every way
that server can fail, against a real loopback server that misbehaves on purpose (tests/openai_fault_server.py)."""
import json

import pytest

from retrieval.answering.prompt import build_messages
from retrieval.answering.engines.remote import GeneratorUnavailable, RemoteGenerator, chat_url
from serve.app import create_app
from serve.service import KbqaService
from serve.wiring import answer_pipeline
from serve.settings import Settings
from tests.fakes import OverlapScorer, ScriptedGenerator, local_client, make_kb, overlap_selector
from retrieval.answering.engines.llama_server import free_port
from tests.openai_fault_server import FaultServer

QUESTION = "How are refunds paid back?"
FAULTS = [("status500", 502, "status"), ("malformed_json", 502, "malformed"), ("broken_stream", 502, "malformed"),
          ("empty", 502, "empty"), ("error_event", 502, "status"), ("drop_mid_stream", 502, "refused"),
          ("stall", 504, "timeout")]


@pytest.fixture
def server():
    with FaultServer(stall_s=2.0) as running:
        yield running


def test_chat_url_accepts_the_root_or_v1():
    assert chat_url("http://h:8/v1/") == chat_url("http://h:8") == "http://h:8/v1/chat/completions"
    with pytest.raises(ValueError, match="http"):
        RemoteGenerator("gpu-box:8000", "m")


def test_the_grounded_prompt_goes_out_whole_and_the_answer_streams_back(server):
    remote = RemoteGenerator(server.url, "served-model", api_key="sk-test", max_new_tokens=50)
    messages = build_messages(QUESTION, [])
    stats: dict = {}
    pieces = list(remote.stream(messages, stats))
    assert "".join(pieces).strip() == server.answer and len(pieces) > 1
    assert stats == {"prompt_tokens": 321, "new_tokens": 12, "truncated": False}
    sent = server.requests[-1]
    assert sent["path"] == "/v1/chat/completions" and sent["headers"]["Authorization"] == "Bearer sk-test"
    assert sent["body"]["messages"] == messages and sent["body"]["model"] == "served-model"
    assert sent["body"]["stream"] is True and sent["body"]["temperature"] == 0 and sent["body"]["max_tokens"] == 50
    assert remote.health.last_ok is True and remote.probe() == (True, "ok")


def test_a_server_that_ignores_stream_true_still_answers(server):
    server.behaviour = "json"
    stats: dict = {}
    assert "".join(RemoteGenerator(server.url, "m").stream([], stats)) == server.answer
    assert stats["new_tokens"] == 7


@pytest.mark.parametrize("behaviour,status,kind", FAULTS)
def test_every_failure_is_one_exception_with_the_gateway_status(server, behaviour, status, kind):
    server.behaviour = behaviour
    remote = RemoteGenerator(server.url, "m", timeout_s=0.5)
    with pytest.raises(GeneratorUnavailable) as raised:
        list(remote.stream([]))
    assert (raised.value.status, raised.value.kind) == (status, kind)
    assert remote.health.last_ok is False and remote.health.failures == {kind: 1}


def test_a_refused_connection_is_a_502_and_the_probe_says_unreachable():
    remote = RemoteGenerator(f"http://127.0.0.1:{free_port()}/v1", "m")
    with pytest.raises(GeneratorUnavailable) as raised:
        list(remote.stream([]))
    assert (raised.value.status, raised.value.kind) == (502, "refused")
    assert remote.probe()[0] is False


def _app(tmp_path, encoder, server_url, fallback, timeout_s=0.5, local=None):
    settings = Settings(home=tmp_path / "home", min_relevance=0.1, generator_url=server_url,
                        generator_model="m", generator_fallback=fallback, generator_timeout_s=timeout_s)
    assert settings.resolved_answer_mode == "generate"   # a team that plugs a model in wants it to write
    remote = RemoteGenerator(server_url, "m", timeout_s=timeout_s)
    service = KbqaService(settings, encoder, answer_pipeline(settings, generator=remote, selector=overlap_selector(0.5), sentence_scorer=OverlapScorer(), fallback_generator=local))
    service.ingest(make_kb(tmp_path / "kb"), "default")
    return local_client(create_app(settings, service))


def test_a_remote_answer_goes_through_the_same_checks(tmp_path, fake_encoder, server):
    server.answer = "Refunds are paid back within five days [1] [7]."
    with _app(tmp_path, fake_encoder, server.url, "error") as client:
        body = client.post("/v1/ask", json={"question": QUESTION}).json()
        assert body["grounding"] == "generated" and body["answer"] == "Refunds are paid back within five days [1]."
        assert [c["n"] for c in body["citations"]] == [1]   # [7] is no prompt passage: dropped
        assert body["timings_ms"]["prompt_tokens"] == 321
        server.answer = "Refunds are paid by carrier pigeon on the moon [1]."   # not in the passage
        body = client.post("/v1/ask", json={"question": QUESTION}).json()
        assert body["grounding"] == "extractive" and body["fallback_reason"] == "unsupported"
        server.answer = "Refunds refunds refunds refunds refunds [1]"
        assert client.post("/v1/ask", json={"question": QUESTION}).json()["fallback_reason"] == "loop"
        server.answer = "I don't know based on the documentation."
        assert client.post("/v1/ask", json={"question": QUESTION}).json()["abstained"] is True
        # The prompt is kbqa's: numbered passages that passed the relevance gate, kbqa's system prompt.
        prompt = server.requests[-1]["body"]["messages"]
        assert prompt[0]["role"] == "system" and "[1] Billing" in prompt[1]["content"]


@pytest.mark.parametrize("behaviour,status,kind", FAULTS)
def test_fallback_error_answers_502_or_504_as_json(tmp_path, fake_encoder, server, behaviour, status, kind):
    server.behaviour = behaviour
    with _app(tmp_path, fake_encoder, server.url, "error") as client:
        response = client.post("/v1/ask", json={"question": QUESTION})
        assert response.status_code == status
        assert response.json()["detail"] == {"generator": kind} and "generator" in response.json()["error"]
        metrics = client.get("/metrics").text
        assert f'kbqa_remote_generator_failures_total{{kind="{kind}"}} 1.0' in metrics
        assert "kbqa_remote_generator_up 0.0" in metrics
        # The same failure mid-stream: the 200 is already sent, so it is the stream's last event.
        with client.stream("POST", "/v1/ask", json={"question": QUESTION, "stream": True}) as streamed:
            blocks = "".join(streamed.iter_text()).strip().split("\n\n")
        assert blocks[-1].startswith("event: error")
        assert json.loads(blocks[-1].split("\n", 1)[1].removeprefix("data: "))["status"] == status


def test_fallback_extractive_quotes_the_passages_and_says_why(tmp_path, fake_encoder, server):
    server.behaviour = "status500"
    with _app(tmp_path, fake_encoder, server.url, "extractive") as client:
        body = client.post("/v1/ask", json={"question": QUESTION}).json()
        assert body["grounding"] == "extractive" and body["fallback_reason"] == "generator unavailable"
        assert body["answer"] == "Refunds are paid back within five days. [1]"
        ready = client.get("/readyz").json()   # reachable (GET /models works) and a fallback is declared
        assert ready["ready"] is True and ready["generator"]["last_call_ok"] is False
        assert ready["generator"]["failures"] == {"status": 1}


def test_fallback_local_lets_the_embedded_generator_write(tmp_path, fake_encoder):
    local = ScriptedGenerator("Refunds are paid back within five days [1].")
    with _app(tmp_path, fake_encoder, f"http://127.0.0.1:{free_port()}/v1", "local", local=local) as client:
        body = client.post("/v1/ask", json={"question": QUESTION}).json()
        assert body["grounding"] == "generated" and body["fallback_reason"] == "generator unavailable"
        assert body["answer"] == "Refunds are paid back within five days [1]." and len(local.prompts) == 1


def test_readyz_is_503_when_the_remote_is_down_and_no_fallback_is_declared(tmp_path, fake_encoder):
    with _app(tmp_path, fake_encoder, f"http://127.0.0.1:{free_port()}/v1", "error") as client:
        response = client.get("/readyz")
        assert response.status_code == 503 and "generator" in response.json()["problems"]
        assert response.json()["generator"]["reachable"] is False


def test_settings_refuse_a_url_without_a_model_name(tmp_path):
    with pytest.raises(ValueError, match="KBQA_GENERATOR_MODEL"):
        Settings(home=tmp_path, generator_url="http://127.0.0.1:1/v1")
    assert Settings(home=tmp_path).resolved_answer_mode == "select"
