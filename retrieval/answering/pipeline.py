"""A question's whole path to its answer, in one place:

    follow-up rewrite -> retrieval -> relevance gate -> answerability gate (opt-in) -> selection -> gap gate
    -> the answer: the selection itself (``mode="select"``) or the generator's text over the same passages, verified
    -> citations -> hand-off -> one complete ``Answer``

``mode="select"`` (what `kbqa serve` runs unless a remote generator is set, serve/settings.py) serves sentences quoted
from the passages, each passage's run cited [n], which measured above the 135M generator on every dev set (README).
``mode="generate"`` lets the generator write; its text is served only if it is supported and not degenerate, else
the selection is. Each stage is a component with a cheap, validating constructor and one ``run``; the models they
hold are loaded elsewhere (serve/wiring.py) and passed in.
"""
from __future__ import annotations

from typing import Callable, Iterator, Literal

from retrieval.answering.cosine_scale import CosineScale, on_scale
from retrieval.answering.followup import standalone_question
from retrieval.answering.gates import AnswerabilityGate, GapGate, RelevanceGate
from retrieval.answering.handoff import HandoffPolicy
from retrieval.answering.prompt import build_messages
from retrieval.answering.records import Answer, Handoff, Timings
from retrieval.answering.selection import Selection, SentenceSelection
from retrieval.answering.verification import ABSTAINED, Outcome, Verifier, cite, passages_of, quoted
from retrieval.answering.writing import GENERATOR_UNAVAILABLE, Writer
from retrieval.search import SearchHit

ANSWER_MODES = ("select", "generate")
Retrieve = Callable[[str], list[SearchHit]]   # the standalone question -> ranked hits
Event = tuple[str, object]                    # ("token", str) while the answer is written, then ("final", Answer)


class AnswerPipeline:
    def __init__(self, relevance: RelevanceGate, mode: Literal["select", "generate"] = "generate",
                 writer: Writer | None = None, selection: SentenceSelection | None = None,
                 answerability: AnswerabilityGate | None = None, gap: GapGate | None = None,
                 verifier: Verifier | None = None, handoff: HandoffPolicy | None = None):
        if mode not in ANSWER_MODES:
            raise ValueError(f"answer mode must be one of {ANSWER_MODES}, got {mode!r}")
        if mode == "select" and selection is None:
            raise ValueError("answer mode 'select' needs a sentence selector and a sentence scorer (`kbqa prepare`)")
        if mode == "generate" and writer is None:
            raise ValueError("answer mode 'generate' needs a generator")
        if gap is not None and selection is None:
            raise ValueError("the gap detector reads the selection: it needs a selector and a sentence scorer")
        self.relevance, self.mode, self.writer, self.selection = relevance, mode, writer, selection
        self.answerability, self.gap = answerability, gap
        self.verifier = verifier or Verifier()
        self.handoff = handoff

    def stream(self, question: str, retrieve: Retrieve, history: list[dict] | None = None, answer_id: str = "",
               rated_unhelpful: bool = False, min_relevance: float | None = None,
               cosine_scale: CosineScale | None = None) -> Iterator[Event]:
        """Rewrites and retrieves now (so an unknown collection fails before anything is sent), then returns the
        events: ("token", text) pieces as the answer is written (the generator's, or the selection at once), then
        one ("final", Answer): what to show, which may differ from the tokens (citations resolved, an unsupported
        or degenerate text replaced). ``answer_id``: what the answer will be recorded under; ``rated_unhelpful``:
        the conversation already holds an unhelpful rating (the hand-off reads it); ``min_relevance``: the
        relevance gate's cosine floor for this collection's encoder, when not the gate's own; ``cosine_scale``: its
        cosines onto the scale the selector and gap detector were fitted on (cosine_scale.py), when not MiniLM's."""
        timings = Timings()
        history = history or []
        standalone = standalone_question(question, history)
        with timings.stage("retrieve"):
            hits = retrieve(standalone)
        return self._events(question, standalone, hits, history, answer_id, rated_unhelpful, timings, min_relevance,
                            cosine_scale)

    def run(self, question: str, retrieve: Retrieve, history: list[dict] | None = None, answer_id: str = "",
            rated_unhelpful: bool = False) -> Answer:
        final = None
        for kind, value in self.stream(question, retrieve, history, answer_id, rated_unhelpful):
            if kind == "final":
                final = value
        return final

    def _events(self, question: str, standalone: str, hits: list[SearchHit], history: list[dict], answer_id: str,
                rated_unhelpful: bool, timings: Timings, min_relevance: float | None = None,
                cosine_scale: CosineScale | None = None) -> Iterator[Event]:
        used = self.relevance.run(hits, min_relevance)
        outcome, answerability = ABSTAINED, None
        if used:
            outcome, answerability = yield from self._answer(standalone, used, timings, cosine_scale)
        handoff = (self.handoff.decide(question, history, outcome.abstained, answerability, rated_unhelpful)
                   if self.handoff is not None else Handoff(False))
        yield "final", Answer(
            question=question, answer=outcome.text, abstained=outcome.abstained, grounding=outcome.grounding,
            citations=cite(used, outcome.numbers), unsupported=outcome.unsupported, answer_id=answer_id,
            rewritten_question=standalone if standalone != question else None, timings_ms=timings.with_total(),
            answerability=answerability, fallback_reason=outcome.fallback_reason, handoff=handoff)

    def _answer(self, question: str, used: list[SearchHit], timings: Timings, cosine_scale: CosineScale | None = None):
        """Yields the tokens; returns (Outcome, answerability)."""
        answerability = None
        if self.answerability is not None:
            with timings.stage("answerability"):
                verdict = self.answerability.run(question, passages_of(used))
            answerability = verdict.answerability
            if not verdict.passed:   # no passage holds the answer: abstain without spending a generation on it
                return ABSTAINED, answerability
        selection: Selection | None = None
        if self.selection is not None:
            with timings.stage("select"):
                read = on_scale(used, cosine_scale)
                selection = self.selection.run(question, read)
            if self.gap is not None:
                verdict = self.gap.run(question, read, selection)
                answerability = verdict.answerability
                if not verdict.passed:
                    return ABSTAINED, answerability
        if self.mode == "select":
            outcome = quoted(question, selection, used)
            yield "token", outcome.text
            return outcome, answerability
        outcome = yield from self._written(question, used, selection, timings)
        return outcome, answerability

    def _written(self, question: str, used: list[SearchHit], selection: Selection | None, timings: Timings):
        with timings.stage("generate"):
            draft = yield from self.writer.stream(build_messages(question, passages_of(used)))
        for name, value in (("prompt_tokens", draft.prompt_tokens), ("new_tokens", draft.new_tokens)):
            if value is not None:
                timings.count(name, value)
        if draft.quote_instead:
            return quoted(question, selection, used, GENERATOR_UNAVAILABLE)
        outcome = self.verifier.run(question, draft.raw, used, selection, draft.hit_token_budget)
        if draft.fell_back and outcome.fallback_reason is None:
            return Outcome(outcome.text, outcome.grounding, outcome.numbers, outcome.unsupported,
                           GENERATOR_UNAVAILABLE)
        return outcome
