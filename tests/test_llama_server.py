"""The reference remote generator (issue 15): llama.cpp's real OpenAI-compatible server serving the bundled SmolLM2
GGUF on a free loopback port, behind kbqa's grounding; and the whole chain openai SDK -> kbqa -> llama.cpp."""
import os
from pathlib import Path

import pytest

from retrieval.answering.engines.llama_server import ALIAS, llama_available, llama_served
from retrieval.answering.prompt import build_messages
from retrieval.answering.records import Passage
from retrieval.answering.engines.remote import RemoteGenerator
from retrieval.models import ALL_MODELS
from retrieval.model_store import verify
from serve.app import create_app
from serve.service import KbqaService
from serve.settings import Settings
from tests.fakes import local_client, serving

REPO = Path(__file__).resolve().parents[1]
MODELS = Path(os.environ.get("KBQA_HOME", REPO / ".kbqa")) / "models"
# CI installs the test extras (llama-cpp-python built from source) and sets KBQA_REQUIRE_LLAMA=1: there it must run.
pytestmark = [pytest.mark.integration, pytest.mark.skipif(
    not llama_available() and os.environ.get("KBQA_REQUIRE_LLAMA") != "1",
    reason="llama-cpp-python[server] is not installed (pip install -e '.[test]'; `make test` does it)")]
QUESTION = "How do I enable two-factor authentication?"


@pytest.fixture(scope="module")
def llama():
    with llama_served() as url:
        yield url


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    for name in ALL_MODELS:
        verify(MODELS / name, full=True)
    home = tmp_path_factory.mktemp("home")
    (home / "models").symlink_to(MODELS.resolve())
    small = tmp_path_factory.mktemp("small")
    for name in ("2fa.md", "billing.md", "cancel-subscription.md", "reset-password.md"):
        (small / name).write_text((REPO / "kb" / "docs" / name).read_text())
    service = KbqaService.load(Settings(home=home), with_generator=False)
    service.ingest(small, "default")
    service.close()
    return home


def test_llama_cpp_streams_an_answer_to_kbqa_s_grounded_prompt(llama):
    remote = RemoteGenerator(llama, ALIAS, max_new_tokens=48)
    passages = [Passage("Two-factor authentication", "Open Settings > Security and click Enable 2FA, then scan "
                                                      "the QR code with an authenticator app.")]
    stats: dict = {}
    pieces = list(remote.stream(build_messages(QUESTION, passages), stats))
    assert len(pieces) > 1 and "".join(pieces).strip()
    assert isinstance(stats["truncated"], bool) and remote.probe() == (True, "ok")


def test_kbqa_answers_through_llama_cpp_with_every_check_applied(llama, home):
    settings = Settings(home=home, generator_url=llama, generator_model=ALIAS, generator_fallback="error")
    with local_client(create_app(settings)) as client:
        body = client.post("/v1/ask", json={"question": QUESTION}).json()
        assert "generate" in body["timings_ms"] and body["fallback_reason"] != "generator unavailable"
        # The contract, whatever the model writes: served only if checked, citations resolving to retrieved chunks.
        if body["abstained"]:
            assert body["citations"] == []
        else:
            assert body["grounding"] in ("generated", "extractive") and body["citations"]
            found = client.post("/v1/search", json={"query": QUESTION, "k": 5}).json()["results"]
            assert {c["chunk_id"] for c in body["citations"]} <= {r["chunk_id"] for r in found}
        ready = client.get("/readyz").json()
        assert ready["ready"] is True and ready["generator"]["reachable"] is True
        assert ready["generator"]["last_call_ok"] is True


def test_openai_sdk_to_kbqa_to_llama_cpp(llama, home):
    import openai

    settings = Settings(home=home, generator_url=llama, generator_model=ALIAS)
    with serving(create_app(settings)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        completion = client.chat.completions.create(model="kbqa-default",
                                                    messages=[{"role": "user", "content": QUESTION}])
        assert completion.choices[0].message.content
        assert completion.model_extra["kbqa"]["fallback_reason"] != "generator unavailable"
        chunks = list(client.chat.completions.create(model="kbqa-default", stream=True,
                                                     messages=[{"role": "user", "content": QUESTION}]))
        assert "".join(c.choices[0].delta.content or "" for c in chunks).strip()
        assert chunks[-1].choices[0].finish_reason == "stop" and "grounding" in chunks[-1].model_extra["kbqa"]


def test_the_teacher_writes_questions_through_llama_cpp(llama, tmp_path):
    # The teacher path on a real server: the bundled SmolLM2 here, the 1.5B teacher GGUF or a team's endpoint in use.
    from distill.teacher_questions import QuestionCache, write_questions
    from ingest.records import Chunk

    chunk = Chunk("2fa.md", "2fa.md", "Two-factor authentication", "Enable it", 0,
                  "Open Settings > Security and click Enable 2FA, then scan the QR code with an authenticator app.")
    teacher = RemoteGenerator(llama, ALIAS, max_new_tokens=64)
    cache = QuestionCache(tmp_path / "questions.sqlite")
    questions, report = write_questions([chunk], teacher, cache)
    assert report.asked == 1 and report.failed == 0 and report.written >= 1 and report.teacher_seconds > 0
    assert report.kept + sum(report.dropped.values()) == report.written
    assert all(q.question.endswith("?") and q.chunk_id == chunk.chunk_id for q in questions)
    _, again = write_questions([chunk], teacher, cache)
    assert again.cached == 1 and again.asked == 0
    cache.close()
    teacher.close()
