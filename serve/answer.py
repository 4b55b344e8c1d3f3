"""Grounded answering: relevance gate -> the passages' answer sentences chosen and scored -> knowledge-gap check ->
the answer (the selection itself, or the generator's text over the same passages) with resolved citations.

The default (``mode="select"``) serves the selection: sentences quoted from the passages, each passage's run cited
([n]), which measured above the 135M generator on every dev set (README, issue 19). ``mode="generate"`` lets the
generator write; what it writes is served only if it is supported and not degenerate, else the selection is.
"""
from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field
from typing import Literal

from retrieval.search import SearchHit
from retrieval.generation.abstention import gap_signals
from retrieval.generation.degeneration import degenerate_reason
from retrieval.generation.generator import ABSTENTION, Passage, build_messages, cited_numbers, says_abstain
from retrieval.generation.remote import GeneratorUnavailable
from retrieval.generation.grounding import check_support, content_words, extract_answer
from retrieval.generation.selection import Selection

_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


@dataclass
class Citation:
    n: int
    chunk_id: str
    doc_id: str
    source: str
    title: str
    score: float


@dataclass
class Answer:
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
    answer_id: str = ""   # set when the service records the answer (POST /v1/feedback refers to it)
    rewritten_question: str | None = None   # the standalone form of a follow-up, when history changed it
    timings_ms: dict[str, float] = field(default_factory=dict)
    # p(the prompt passages hold the answer): 1 - the gap detector's p(gap), or the opt-in answerability scorer's;
    # None when neither ran.
    answerability: float | None = None
    # Why the generator's text was not served (unsupported, no citation, loop, repetition, truncated, title, empty,
    # generator unavailable: the remote failed and the fallback answered).
    fallback_reason: str | None = None
    # Whether a person should take over, and why (serve/handoff.py); the service fills it.
    handoff: dict = field(default_factory=lambda: {"recommended": False, "reason": None})

    def to_dict(self) -> dict:
        return asdict(self)


def best_overlap(answer: str, passages: list[Passage]) -> int | None:
    """1-based number of the passage sharing the most content words with the answer, if any."""
    words = content_words(answer)
    overlaps = [len(words & content_words(p.title + " " + p.text)) for p in passages]
    if not overlaps or max(overlaps) == 0:
        return None
    return overlaps.index(max(overlaps)) + 1


def trim_to_sentence(text: str) -> str:
    """Generation stops at a token budget; drop a trailing half sentence when a whole one exists."""
    ends = [m.end() for m in _SENTENCE_END.finditer(text)]
    return text[:ends[-1]].strip() if ends and ends[-1] < len(text.rstrip()) else text.strip()


ON_UNSUPPORTED = ("extractive", "abstain")
ANSWER_MODES = ("select", "generate")
# What answers when a remote generator fails: an error (502/504), the quoted selection, or the embedded generator.
GENERATOR_FALLBACKS = ("error", "extractive", "local")
GENERATOR_UNAVAILABLE = "generator unavailable"


class Answerer:
    def __init__(self, generator, min_relevance: float, prompt_passages: int = 3,
                 support_threshold: float = 0.6, on_unsupported: str = "extractive",
                 answerability=None, answerability_threshold: float = 0.0,
                 mode: Literal["select", "generate"] = "generate", selector=None, sentence_scorer=None,
                 gap_detector=None, fallback: str = "error", fallback_generator=None):
        if not -1.0 <= min_relevance <= 1.0:
            raise ValueError(f"min_relevance is a cosine similarity in [-1, 1], got {min_relevance}")
        if prompt_passages < 1:
            raise ValueError(f"prompt_passages must be >= 1, got {prompt_passages}")
        if not 0.0 <= support_threshold <= 1.0:
            raise ValueError(f"support_threshold is a share in [0, 1], got {support_threshold}")
        if on_unsupported not in ON_UNSUPPORTED:
            raise ValueError(f"on_unsupported must be one of {ON_UNSUPPORTED}, got {on_unsupported!r}")
        if not 0.0 <= answerability_threshold <= 1.0:
            raise ValueError(f"answerability_threshold is a probability in [0, 1], got {answerability_threshold}")
        if mode not in ANSWER_MODES:
            raise ValueError(f"answer mode must be one of {ANSWER_MODES}, got {mode!r}")
        if mode == "select" and (selector is None or sentence_scorer is None):
            raise ValueError("answer mode 'select' needs a sentence selector and a sentence scorer (`kbqa prepare`)")
        if mode == "generate" and generator is None:
            raise ValueError("answer mode 'generate' needs a generator")
        if fallback not in GENERATOR_FALLBACKS:
            raise ValueError(f"generator fallback must be one of {GENERATOR_FALLBACKS}, got {fallback!r}")
        if fallback == "local" and fallback_generator is None:
            raise ValueError("generator fallback 'local' needs the embedded generator loaded")
        if gap_detector is not None and (selector is None or sentence_scorer is None):
            raise ValueError("the gap detector reads the selection: it needs a selector and a sentence scorer")
        self.generator = generator
        self.min_relevance = min_relevance
        self.prompt_passages = prompt_passages
        self.support_threshold = support_threshold
        self.on_unsupported = on_unsupported
        self.answerability = answerability   # retrieval/generation/answerability.py:AnswerabilityScorer, or None
        self.answerability_threshold = answerability_threshold
        self.mode = mode
        self.selector = selector                  # retrieval/generation/selection.py:SentenceSelector, or None
        self.sentence_scorer = sentence_scorer    # its cross-encoder (AnswerabilityScorer over sentences)
        self.gap_detector = gap_detector          # retrieval/generation/abstention.py:GapDetector, or None
        self.fallback = fallback                  # when the (remote) generator raises GeneratorUnavailable
        self.fallback_generator = fallback_generator

    def select(self, hits: list[SearchHit]) -> list[SearchHit]:
        """Passages for the prompt: retrieval order (fused rank), only those that pass the relevance gate."""
        relevant = [h for h in hits if (h.dense_score if h.dense_score is not None else -1.0) >= self.min_relevance]
        return relevant[: self.prompt_passages]

    @staticmethod
    def passages(used: list[SearchHit]) -> list[Passage]:
        return [Passage(h.chunk.context, h.chunk.text) for h in used]

    def answer(self, question: str, hits: list[SearchHit], timings_ms: dict | None = None) -> Answer:
        final = None
        for kind, value in self.stream(question, hits, timings_ms):
            if kind == "final":
                final = value
        return final

    def stream(self, question: str, hits: list[SearchHit], timings_ms: dict | None = None):
        """Yields ("token", text) pieces as the answer is written, then ("final", Answer).

        Tokens are the raw words (the generator's, or the selection at once); the final Answer is what to show (it
        may differ: citations resolved, an unsupported or degenerate answer replaced)."""
        timings = dict(timings_ms or {})
        used = self.select(hits)
        if not used:
            yield "final", Answer(question, ABSTENTION, True, "abstained", [], [], timings_ms=timings)
            return
        passages = self.passages(used)
        answerability = None
        if self.answerability is not None:
            start = time.perf_counter()
            answerability = round(max(self.answerability.scores(question, passages)), 4)
            timings["answerability"] = round((time.perf_counter() - start) * 1000, 1)
            if answerability < self.answerability_threshold:
                # No passage holds the answer: abstain without spending a generation on it.
                yield "final", Answer(question, ABSTENTION, True, "abstained", [], [], timings_ms=timings,
                                      answerability=answerability)
                return
        selection = None
        if self.selector is not None:
            start = time.perf_counter()
            triples = [(p.title, p.text, h.dense_score if h.dense_score is not None else 0.0)
                       for p, h in zip(passages, used)]
            selection = self.selector.select(question, triples, self.sentence_scorer)
            timings["select"] = round((time.perf_counter() - start) * 1000, 1)
            if self.gap_detector is not None:
                gap = self.gap_detector.probability(gap_signals(question, triples, selection))
                answerability = round(1.0 - gap, 4)
                if gap >= self.gap_detector.threshold:
                    yield "final", Answer(question, ABSTENTION, True, "abstained", [], [], timings_ms=timings,
                                          answerability=answerability)
                    return
        if self.mode == "select":
            final = self.selected(question, selection, used, timings)
            yield "token", final.answer
            final.answerability = answerability
            yield "final", final
            return
        start = time.perf_counter()
        pieces: list[str] = []
        stats: dict = {}
        generator, messages = self.generator, build_messages(question, passages)

        def write(engine):   # streams the engine's pieces as tokens, keeping them
            for piece in engine.stream(messages, stats):
                pieces.append(piece)
                yield "token", piece

        try:
            yield from write(generator)
        except GeneratorUnavailable:
            timings["generate"] = round((time.perf_counter() - start) * 1000, 1)
            if self.fallback == "error":
                raise
            if self.fallback == "extractive" or self.fallback_generator is None:
                final = self.selected(question, selection, used, timings, GENERATOR_UNAVAILABLE)
                final.answerability = answerability
                yield "final", final
                return
            # The local generator writes it instead; the pieces already streamed were the remote's (the final
            # event is what to show).
            generator = self.fallback_generator
            pieces.clear()
            stats.clear()
            stats["fallback"] = True
            yield from write(generator)
        timings["generate"] = round((time.perf_counter() - start) * 1000, 1)
        # Token counts as the engine reports them (a remote server may not).
        timings.update({key: stats[key] for key in ("prompt_tokens", "new_tokens") if key in stats})
        max_new = getattr(generator, "max_new_tokens", None)
        hit_budget = stats.get("truncated", bool(max_new) and stats.get("new_tokens", 0) >= max_new)
        final = self.finish(question, "".join(pieces).strip(), used, timings, selection, hit_budget)
        final.answerability = answerability
        if stats.get("fallback") and final.fallback_reason is None:
            final.fallback_reason = GENERATOR_UNAVAILABLE
        yield "final", final

    def _citations(self, used: list[SearchHit], numbers: list[int]) -> list[Citation]:
        return [Citation(n=n, chunk_id=used[n - 1].chunk.chunk_id, doc_id=used[n - 1].chunk.doc_id,
                         source=used[n - 1].chunk.source, title=used[n - 1].chunk.title,
                         score=round(used[n - 1].score, 6)) for n in numbers]

    def selected(self, question: str, selection: Selection | None, used: list[SearchHit], timings: dict,
                 fallback_reason: str | None = None, unsupported: list[str] | None = None) -> Answer:
        """The extractive answer: the selection, each passage's sentences cited; without a selector, the top
        passage's sentences that best match the question."""
        if selection is not None and selection.units:
            text, numbers = selection.text()
        else:
            text, numbers = f"{extract_answer(question, used[0].chunk.text)} [1]", [1]
        return Answer(question, text, False, "extractive", self._citations(used, numbers), unsupported or [],
                      timings_ms=timings, fallback_reason=fallback_reason)

    def finish(self, question: str, raw: str, used: list[SearchHit], timings: dict,
               selection: Selection | None = None, hit_token_budget: bool = False) -> Answer:
        """Generated text -> the answer to show: citations resolved, support and degeneration checked, replaced by
        the selection if it fails either."""
        passages = self.passages(used)
        if says_abstain(raw) or not raw.strip():
            return Answer(question, ABSTENTION, True, "abstained", [], [], timings_ms=timings)
        # A loop or a cut-off is judged on the raw text: trimming the half sentence first would hide the cut.
        # Cut by the budget with no whole sentence to trim back to: a half sentence.
        reason = degenerate_reason(raw, [p.title for p in passages] + [h.chunk.heading for h in used],
                                   hit_token_budget and trim_to_sentence(raw) == raw.strip())
        text, numbers = cited_numbers(trim_to_sentence(raw), len(passages))
        if reason is None and not numbers:
            # The small base generator often forgets to cite: point at the passage it drew most words from.
            best = best_overlap(text, passages)
            if best is not None:
                numbers = [best]
                text = f"{text} [{best}]"
        verdicts = check_support(text, [passages[n - 1].title + " " + passages[n - 1].text for n in numbers],
                                 self.support_threshold)
        unsupported = [v.sentence for v in verdicts if not v.supported]
        if reason is None and unsupported:
            reason = "unsupported"
        if reason is None and not numbers:
            reason = "no citation"
        if reason is not None:
            if reason == "unsupported" and self.on_unsupported == "abstain":
                return Answer(question, ABSTENTION, True, "abstained", [], unsupported, timings_ms=timings,
                              fallback_reason=reason)
            return self.selected(question, selection, used, timings, reason,
                                 unsupported if reason == "unsupported" else [raw])
        return Answer(question, text, False, "generated", self._citations(used, numbers), [], timings_ms=timings)
