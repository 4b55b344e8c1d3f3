"""The records that flow through answering: passages in, one complete ``Answer`` out, and the stage timings."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Passage:
    title: str
    text: str


@dataclass(frozen=True)
class Citation:
    n: int
    chunk_id: str
    doc_id: str
    source: str
    title: str
    score: float
    metadata: dict = field(default_factory=dict)   # the cited document's (product, plan, version, ...)


@dataclass(frozen=True)
class Handoff:
    recommended: bool
    reason: str | None = None   # asks for a person | frustration | abstained | low confidence | repeated failure

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Answer:
    """Built once, complete, by the pipeline (retrieval/answering/pipeline.py); nothing changes it afterwards."""
    question: str
    answer: str
    abstained: bool
    # generated: the generator's answer passed the support and degeneration checks; extractive: sentences quoted
    # from the passages (the default mode, or the fallback named in fallback_reason); abstained: no passage was
    # relevant, the gap detector or the answerability scorer found none holding the answer, or the generator
    # (or the support check, under on_unsupported="abstain") declined.
    grounding: str = "abstained"
    citations: list[Citation] = field(default_factory=list)
    unsupported: list[str] = field(default_factory=list)   # generated sentences the check rejected
    answer_id: str = ""   # the id the answer is recorded under (POST /v1/feedback refers to it)
    rewritten_question: str | None = None   # the standalone form of a follow-up, when history changed it
    timings_ms: dict[str, float] = field(default_factory=dict)
    # p(the prompt passages hold the answer): 1 - the gap detector's p(gap), or the opt-in answerability scorer's;
    # None when neither ran.
    answerability: float | None = None
    # Why the generator's text was not served (unsupported, no citation, loop, repetition, truncated, title, empty,
    # generator unavailable: the remote failed and the fallback answered).
    fallback_reason: str | None = None
    # Whether a person should take over, and why (retrieval/answering/handoff.py).
    handoff: Handoff = Handoff(False)
    # The customer context that scoped the search (serve/customer.py): {"used": {field: {metadata, use, value}},
    # "ignored": [fields]}; None when the request carried none.
    context: dict | None = None
    # The question's language (ingest/language.py); the abstention is written in it (retrieval/answering/phrases.py).
    language: str = "en"

    def to_dict(self) -> dict:
        return asdict(self)


class Timings:
    """Milliseconds per stage, taken one way everywhere: ``with timings.stage("select"): ...``; ``total`` is the
    time since the timings were started (the question's arrival)."""

    def __init__(self):
        self._start = time.perf_counter()
        self._values: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self._values[name] = round((time.perf_counter() - start) * 1000, 1)

    def count(self, name: str, value: int) -> None:
        """A count beside the times (the generator's prompt and new tokens)."""
        self._values[name] = value

    def with_total(self) -> dict[str, float]:
        return {**self._values, "total": round((time.perf_counter() - self._start) * 1000, 1)}
