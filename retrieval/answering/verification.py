"""From a written text (or a selection) to what is served: citations resolved to the prompt passages, the generator's
text checked for support and degeneration and replaced by the selection when it fails.

``Outcome`` is the served part of an answer (text, grounding, cited passage numbers); the pipeline wraps it into
the ``Answer`` with the question, timings and hand-off.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from retrieval.answering.degeneration import degenerate_reason
from retrieval.answering.grounding import check_support, content_words, extract_answer
from retrieval.answering.prompt import ABSTENTION, cited_numbers, says_abstain
from retrieval.answering.records import Citation, Passage
from retrieval.answering.selection import Selection
from retrieval.search import SearchHit

ON_UNSUPPORTED = ("extractive", "abstain")
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")


@dataclass(frozen=True)
class Outcome:
    text: str
    grounding: str                      # generated | extractive | abstained
    numbers: list[int] = field(default_factory=list)   # 1-based prompt passages cited
    unsupported: list[str] = field(default_factory=list)
    fallback_reason: str | None = None

    @property
    def abstained(self) -> bool:
        return self.grounding == "abstained"


ABSTAINED = Outcome(ABSTENTION, "abstained")


def passages_of(used: list[SearchHit]) -> list[Passage]:
    return [Passage(h.chunk.context, h.chunk.text) for h in used]


def cite(used: list[SearchHit], numbers: list[int]) -> list[Citation]:
    """The citations [n] of an answer over the prompt passages ``used``."""
    return [Citation(n=n, chunk_id=used[n - 1].chunk.chunk_id, doc_id=used[n - 1].chunk.doc_id,
                     source=used[n - 1].chunk.source, title=used[n - 1].chunk.title,
                     score=round(used[n - 1].score, 6), metadata=dict(used[n - 1].metadata)) for n in numbers]


def quoted(question: str, selection: Selection | None, used: list[SearchHit], fallback_reason: str | None = None,
           unsupported: list[str] | None = None) -> Outcome:
    """The extractive answer: the selection, each passage's sentences cited; without a selection, the top passage's
    sentences that best match the question."""
    if selection is not None and selection.units:
        text, numbers = selection.text()
    else:
        text, numbers = f"{extract_answer(question, used[0].chunk.text)} [1]", [1]
    return Outcome(text, "extractive", numbers, unsupported or [], fallback_reason)


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


class Verifier:
    """Generated text -> the outcome to serve: citations resolved, support and degeneration checked, the selection
    instead when either fails (or an abstention, with ``on_unsupported="abstain"``)."""

    def __init__(self, support_threshold: float = 0.6, on_unsupported: str = "extractive"):
        if not 0.0 <= support_threshold <= 1.0:
            raise ValueError(f"support_threshold is a share in [0, 1], got {support_threshold}")
        if on_unsupported not in ON_UNSUPPORTED:
            raise ValueError(f"on_unsupported must be one of {ON_UNSUPPORTED}, got {on_unsupported!r}")
        self.support_threshold, self.on_unsupported = support_threshold, on_unsupported

    def run(self, question: str, raw: str, used: list[SearchHit], selection: Selection | None = None,
            hit_token_budget: bool = False) -> Outcome:
        passages = passages_of(used)
        if says_abstain(raw) or not raw.strip():
            return ABSTAINED
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
        if reason is None:
            return Outcome(text, "generated", numbers)
        if reason == "unsupported" and self.on_unsupported == "abstain":
            return Outcome(ABSTENTION, "abstained", [], unsupported, reason)
        return quoted(question, selection, used, reason, unsupported if reason == "unsupported" else [raw])
