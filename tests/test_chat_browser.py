"""The chat page in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright) against a real
uvicorn server: type a question, watch the answer stream in, see a citation, send feedback."""
import os
import shutil
import socket
import threading
import time

import pytest
import uvicorn

from retrieval.answering.phrases import ABSTENTIONS
from serve.app import create_app
from serve.service import KbqaService
from serve.wiring import answer_pipeline
from serve.settings import Settings
from tests.fakes import make_kb

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# CI installs Chromium and sets KBQA_REQUIRE_BROWSER=1, so there a missing browser fails instead of skipping.
NO_BROWSER = (os.environ.get("KBQA_SKIP_BROWSER") == "1" or
              (not os.path.exists(CHROMIUM) and os.environ.get("KBQA_REQUIRE_BROWSER") != "1"))
NO_BROWSER_REASON = ("KBQA_SKIP_BROWSER=1" if os.environ.get("KBQA_SKIP_BROWSER") == "1" else
                     "Debian's chromium is not installed (`apt-get install chromium`; .ci/run does it)")


class SlowScriptedGenerator:
    """Writes its answer word by word with a pause, so the page can be seen mid-stream."""

    def __init__(self, text, pause=0.15):
        self.text, self.pause = text, pause

    def stream(self, messages, stats=None):
        if stats is not None:
            stats.update(prompt_tokens=100, new_tokens=len(self.text.split()))
        for word in self.text.split(" "):
            time.sleep(self.pause)
            yield word + " "


@pytest.fixture
def server(tmp_path, fake_encoder):
    # The generator path: the page must show an answer while it is being written.
    settings = Settings(home=tmp_path / "home", min_relevance=0.1, answer_mode="generate")
    generator = SlowScriptedGenerator("Refunds are paid back within five days of the request [1].")
    service = KbqaService(settings, fake_encoder, answer_pipeline(settings, generator=generator))
    service.ingest(make_kb(tmp_path / "kb"), "default")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings, service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", service
    server.should_exit = True
    thread.join(10)


@pytest.mark.skipif(NO_BROWSER, reason=NO_BROWSER_REASON)
def test_chat_page_streams_an_answer_with_a_citation(server):
    from playwright.sync_api import expect, sync_playwright

    url, service = server
    assert os.path.exists(CHROMIUM), "install Debian's chromium (.ci/run does) or set KBQA_SKIP_BROWSER=1"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(url + "/")
        page.fill("#question", "How are refunds paid back?")
        page.click("#send")
        answer = page.locator(".turn.bot").last
        # Mid-stream: some words are on the page before the final event adds the citations.
        expect(answer).to_contain_text("Refunds are", timeout=10_000)
        assert answer.locator(".citation").count() == 0
        citation = answer.locator(".citation").first
        expect(citation).to_contain_text("[1]", timeout=20_000)
        expect(answer).to_contain_text("within five days of the request")
        assert citation.get_attribute("href") == "/v1/collections/default/documents/billing.md"
        answer.locator(".feedback button").first.click()
        expect(answer.locator(".feedback")).to_contain_text("Thanks", timeout=10_000)
        assert answer.locator(".handoff").count() == 0
        # Asking for a person: the answer still comes, with the hand-off recommendation under it.
        page.fill("#question", "I want to talk to a human about refunds")
        page.click("#send")
        expect(page.locator(".turn.bot").last.locator(".handoff")).to_contain_text("asks for a person", timeout=20_000)
        # A Japanese question in a new conversation: its script survives the round trip, and what kbqa says itself
        # (nothing in these English docs answers it) comes in Japanese.
        page.goto(url + "/")
        page.fill("#question", "返金はいつ支払われますか？")
        page.click("#send")
        expect(page.locator(".turn.user").last).to_have_text("返金はいつ支払われますか？")
        expect(page.locator(".turn.bot").last).to_contain_text(ABSTENTIONS["ja"], timeout=20_000)
        browser.close()
    assert service.feedback.list_feedback()[0]["helpful"] is True
