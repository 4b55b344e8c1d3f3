"""kbqa as an OpenAI-compatible server (issue 15, 2), driven by the official `openai` SDK and LangChain's ChatOpenAI
against the real app on a loopback port."""
import httpx
import pytest

openai = pytest.importorskip("openai", reason="the OpenAI SDK comes with the test extra: pip install -e '.[test]'")

from retrieval.answering.prompt import ABSTENTION
from retrieval.answering.engines.remote import RemoteGenerator
from serve.app import create_app
from serve.auth import KeyStore
from serve.service import KbqaService
from serve.wiring import answer_pipeline
from serve.settings import Settings
from tests.fakes import ScriptedGenerator, make_kb, serving
from tests.openai_fault_server import FaultServer

QUESTION = "How are refunds paid back?"
ANSWER = "Refunds are paid back within five days [1]."


def _service(tmp_path, encoder, generator, **settings):
    settings = Settings(home=tmp_path / "home", min_relevance=0.1, answer_mode="generate", **settings)
    service = KbqaService(settings, encoder, answer_pipeline(settings, generator=generator))
    service.ingest(make_kb(tmp_path / "kb"), "default")
    service.ingest(make_kb(tmp_path / "kb2"), "other")
    return settings, service


@pytest.fixture
def kbqa(tmp_path, fake_encoder):
    """(base URL, the scripted generator): keyless, loopback."""
    generator = ScriptedGenerator(ANSWER)
    settings, service = _service(tmp_path, fake_encoder, generator)
    with serving(create_app(settings, service)) as url:
        yield url, generator


def sdk(url, key="unused-in-keyless-mode"):
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def test_models_are_the_collections(kbqa):
    assert sorted(m.id for m in sdk(kbqa[0]).models.list()) == ["kbqa-default", "kbqa-other"]


def test_a_completion_carries_citations_in_the_text_and_in_the_extension(kbqa):
    completion = sdk(kbqa[0]).chat.completions.create(
        model="kbqa-default", messages=[{"role": "system", "content": "You are a pirate."},
                                        {"role": "user", "content": QUESTION}], temperature=0.7, max_tokens=5)
    assert completion.object == "chat.completion" and completion.model == "kbqa-default"
    message = completion.choices[0].message
    assert message.role == "assistant" and completion.choices[0].finish_reason == "stop"
    assert message.content == f"{ANSWER}\n\nSources:\n[1] Billing (billing.md)"
    extension = completion.model_extra["kbqa"]
    assert extension["grounding"] == "generated" and extension["abstained"] is False
    assert [(c["n"], c["source"]) for c in extension["citations"]] == [(1, "billing.md")]
    assert len(extension["answer_id"]) == 32   # POST /v1/feedback takes it
    # kbqa's grounding prompt, not the client's system message, reached the generator.
    assert "pirate" not in str(kbqa[1].prompts[-1])


def test_streaming_sends_the_same_answer_as_chunks_then_done(kbqa):
    client = sdk(kbqa[0])
    whole = client.chat.completions.create(model="kbqa-default", messages=[{"role": "user", "content": QUESTION}])
    chunks = list(client.chat.completions.create(model="kbqa-default", stream=True,
                                                 messages=[{"role": "user", "content": QUESTION}]))
    assert all(c.object == "chat.completion.chunk" for c in chunks) and chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[-1].model_extra["kbqa"]["citations"][0]["source"] == "billing.md"
    with httpx.stream("POST", f"{kbqa[0]}/v1/chat/completions", json={
            "model": "kbqa-default", "stream": True, "messages": [{"role": "user", "content": QUESTION}]}) as raw:
        assert raw.headers["content-type"].startswith("text/event-stream")
        assert list(raw.iter_lines())[-2:] == ["data: [DONE]", ""]


def test_earlier_turns_are_the_history_and_an_abstention_is_a_normal_message(kbqa):
    url, generator = kbqa
    completion = sdk(url).chat.completions.create(model="kbqa-default", messages=[
        {"role": "user", "content": QUESTION}, {"role": "assistant", "content": "Within five days [1]."},
        {"role": "user", "content": [{"type": "text", "text": "and how long does it take?"}]}])
    assert completion.model_extra["kbqa"]["rewritten_question"] == "and how long does it take? (refunds paid back)"
    generator.text = ABSTENTION
    completion = sdk(url).chat.completions.create(model="kbqa-default", messages=[{"role": "user", "content": QUESTION}])
    assert completion.choices[0].message.content == ABSTENTION and completion.choices[0].finish_reason == "stop"
    assert completion.model_extra["kbqa"]["abstained"] is True and completion.model_extra["kbqa"]["citations"] == []


def test_request_errors_are_openai_errors(kbqa):
    client = sdk(kbqa[0])
    with pytest.raises(openai.NotFoundError, match="kbqa-<collection>"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": QUESTION}])
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="kbqa-nope", messages=[{"role": "user", "content": QUESTION}])
    with pytest.raises(openai.BadRequestError, match="last message"):
        client.chat.completions.create(model="kbqa-default", messages=[{"role": "assistant", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="2000"):
        client.chat.completions.create(model="kbqa-default", messages=[{"role": "user", "content": "x" * 2001}])
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="kbqa-default", messages=[])
    body = httpx.post(f"{kbqa[0]}/v1/chat/completions", json={"model": "kbqa-nope", "messages": [
        {"role": "user", "content": QUESTION}]}).json()
    assert body["error"]["type"] == "not_found_error" and body["error"]["code"] == "model_not_found"


def test_keys_scopes_bindings_and_rate_limits_hold_on_this_route(tmp_path, fake_encoder):
    settings, service = _service(tmp_path, fake_encoder, ScriptedGenerator(ANSWER), rate_limit_per_minute=4)
    keys = KeyStore(tmp_path / "home" / "keys.sqlite")
    bound = keys.create("widget", "query", ["default"])
    with serving(create_app(settings, service)) as url:
        with pytest.raises(openai.AuthenticationError):
            sdk(url, "wrong-key").models.list()
        assert [m.id for m in sdk(url, bound).models.list()] == ["kbqa-default"]
        with pytest.raises(openai.PermissionDeniedError, match="other"):
            sdk(url, bound).chat.completions.create(model="kbqa-other", messages=[{"role": "user", "content": QUESTION}])
        # Two requests spent of the key's four a minute: the third and fourth are answered, the fifth refused.
        for _ in range(2):
            sdk(url, bound).chat.completions.create(model="kbqa-default",
                                                     messages=[{"role": "user", "content": QUESTION}])
        with pytest.raises(openai.RateLimitError):
            sdk(url, bound).chat.completions.create(model="kbqa-default",
                                                     messages=[{"role": "user", "content": QUESTION}])
    keys.close()


def test_a_failing_remote_generator_is_a_gateway_error_in_both_modes(tmp_path, fake_encoder):
    with FaultServer() as broken:
        broken.behaviour = "status500"
        settings, service = _service(tmp_path, fake_encoder, RemoteGenerator(broken.url, "m"),
                                     generator_url=broken.url, generator_model="m", generator_fallback="error")
        with serving(create_app(settings, service)) as url:
            with pytest.raises(openai.InternalServerError) as raised:
                sdk(url).chat.completions.create(model="kbqa-default", messages=[{"role": "user", "content": QUESTION}])
            assert raised.value.status_code == 502 and raised.value.body["type"] == "server_error"
            with pytest.raises(openai.APIError, match="generator"):
                list(sdk(url).chat.completions.create(model="kbqa-default", stream=True,
                                                      messages=[{"role": "user", "content": QUESTION}]))


def test_langchain_chat_openai_talks_to_kbqa(kbqa):
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(base_url=f"{kbqa[0]}/v1", api_key="unused", model="kbqa-default", max_retries=0)
    reply = chat.invoke(QUESTION)
    assert reply.content.startswith(ANSWER) and "Sources:" in reply.content
    assert "".join(piece.content for piece in chat.stream(QUESTION)) == reply.content
