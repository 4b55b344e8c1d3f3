"""Shared test doubles: hand-checkable encoder, scripted generator, a tiny knowledge base and hits."""
from __future__ import annotations

import hashlib
import re
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ingest.records import Chunk
from retrieval.search import SearchHit


class FakeEncoder:
    """Bag of words hashed into 64 buckets, L2-normalised: cosine = shared-word overlap, checkable by hand."""

    dim = 64

    def __init__(self, encoder_id: str = "fake@1"):
        self.encoder_id = encoder_id
        self.calls: list[int] = []  # how many texts each encode() call got

    @staticmethod
    def words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", text.lower())

    def count_tokens(self, text: str) -> int:
        return len(self.words(text))

    def encode(self, texts, batch_size=64, show_progress=False):
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in self.words(text):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)


class NamedFakes:
    """Shipped encoders by model name, as serve/wiring.SharedEncoders gives them, made of fake encoders whose ids
    name the model ("encoder-multilingual-e5-small@1")."""

    def __init__(self):
        self.loaded = {}

    def __call__(self, name):
        return self.loaded.setdefault(name, FakeEncoder(f"{name}@1"))


class ScriptedGenerator:
    """Returns a fixed text, and records the prompts it was given."""

    def __init__(self, text):
        self.text, self.prompts = text, []

    def stream(self, messages, stats=None):
        self.prompts.append(messages)
        if stats is not None:
            stats.update(prompt_tokens=100, new_tokens=10)
        yield from (piece + " " for piece in self.text.split(" "))


def hit(source, text, cosine, heading=""):
    return SearchHit(Chunk(source, source, source.title(), heading, 0, text), score=cosine, dense_score=cosine)


HITS = [hit("refunds", "Refunds are paid within five days.", 0.8),
        hit("cookies", "Plausible does not use cookies.", 0.6, heading="Privacy"),
        hit("teams", "Invite colleagues from team settings.", 0.5),
        hit("other", "Unrelated text.", 0.45)]


DOCS = {
    "billing.md": "---\ntitle: Billing\n---\n## Refunds\nRefunds are paid back within five days.\n## Invoices\nInvoices are emailed monthly.",
    "privacy.md": "# Privacy\nWe never use cookies or store personal data.",
    "faq/teams.md": "# Teams\nInvite colleagues from the team settings page.",
}


def make_kb(root: Path, docs=DOCS) -> Path:
    for name, text in docs.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


class OverlapScorer:
    """Sentence scorer by hand: p = share of the question's content words in the sentence (clipped to (0, 1))."""

    def __init__(self):
        self.calls: list[int] = []

    def scores(self, question, passages):
        from retrieval.answering.grounding import content_words

        self.calls.append(len(passages))
        asked = content_words(question) or {""}
        return [min(max(len(asked & content_words(p.text)) / len(asked), 0.01), 0.99) for p in passages]


def overlap_selector(threshold=0.5, budget_words=60):
    """A selector that trusts only the scorer: logit weight 1, nothing else (FEATURES order)."""
    from retrieval.answering.selection import FEATURES, SentenceSelector

    return SentenceSelector([1.0 if name == "score_logit" else 0.0 for name in FEATURES], threshold, budget_words)


def local_client(app, **kwargs):
    """A TestClient that connects from 127.0.0.1: keyless mode serves loopback clients only (serve/auth.py)."""
    from fastapi.testclient import TestClient

    return TestClient(app, client=("127.0.0.1", 50000), **kwargs)


def hostile_files() -> list[tuple[str, bytes]]:
    """Issue 13, 5: files that used to fail a whole upload with a 500 (or a 422) and then block the collection."""
    fuzzed_pdf = (b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
                  b"2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n"
                  b"xref\n0 3\n0000000000 65535 f \n00000000zz 00000 n \ntrailer << /Size 3 /Root 1 0 R >>\n"
                  b"startxref\n9\n%%EOF\n")
    return [
        ("deep.json", b"[" * 100_000 + b"]" * 100_000),
        ("fuzzed.pdf", fuzzed_pdf),
        ("hugeid.json", b'[{"id": ' + b"9" * 5000 + b', "title": "t", "text": "some words here"}]'),
        ("surrogate.json", b'[{"id": "s1", "title": "t", "text": "broken \\ud800 text"}]'),
        ("dup-a.jsonl", b'{"id": "same", "title": "A", "text": "First record about returns policy."}\n'),
        ("dup-b.jsonl", b'{"id": "same", "title": "B", "text": "Second record about returns policy."}\n'),
    ]


@contextmanager
def serving(app):
    """The app on a real loopback port (uvicorn in a thread): for clients that bring their own HTTP stack (the
    `openai` SDK speaks httpx2, which a TestClient cannot stand in for). Yields the base URL."""
    import threading
    import time

    import uvicorn

    from retrieval.answering.engines.llama_server import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def scripted_service(tmp_path, encoder, text="Refunds are paid back within five days [1].", **settings):
    """(service over the tiny knowledge base with a scripted generator, that generator): change ``generator.text``
    to change what it answers."""
    from serve.service import KbqaService
    from serve.wiring import answer_pipeline
    from serve.settings import Settings

    generator = ScriptedGenerator(text)
    settings = Settings(**{"home": tmp_path / "home", "min_relevance": 0.1, **settings})
    service = KbqaService(settings, encoder, answer_pipeline(settings, generator=generator))
    service.ingest(make_kb(tmp_path / "kb"), "default")
    return service, generator


def pipeline(generator=None, selector=None, sentence_scorer=None, gap_detector=None, answerability=None,
             **settings):
    """The answer pipeline the service would compose (serve/wiring.py) over these parts; ``settings``: Settings
    fields (min_relevance 0.3 and answer mode "generate" unless given)."""
    from serve.settings import Settings
    from serve.wiring import answer_pipeline

    return answer_pipeline(Settings(**{"min_relevance": 0.3, "answer_mode": "generate", **settings}), generator,
                           selector, sentence_scorer, gap_detector, answerability)
