"""Label-free training queries from a collection's own chunks."""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

from ingest.records import Chunk, strip_markup

# Not grounding.split_sentences: this looser cut defines the distillation data, and the shared splitter changes 883
# of kb/'s 1,843 pseudo-queries; it moves when distill_quality.py is rerun to measure it (README).
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class PseudoQuery:
    text: str
    chunk_id: str   # the chunk it was taken from: the positive
    doc_id: str
    kind: str       # title | heading | question | sentence


def make_pseudo_queries(chunks: list[Chunk], sentences_per_chunk: int = 1, seed: int = 0) -> list[PseudoQuery]:
    """Titles and headings (for the first chunk under them), FAQ-style questions inside a chunk,
    and a few salient sentences (5-30 words, not the first one, which often repeats the heading), except in
    FAQ answers (chunks under a question title or heading).

    Sentences do not read like user questions: on the COVID FAQ none at all matched the teacher, where one per
    chunk lost 3.4 nDCG@10 points. Giving sentences only to chunks nothing else points at, and generator-written
    questions (doc2query) in their place, were both a wash on the tune split and left the product (README)."""
    rng = random.Random(seed)
    queries: dict[tuple[str, str], PseudoQuery] = {}
    seen_sections: set[tuple[str, str]] = set()

    def add(text: str, chunk: Chunk, kind: str) -> None:
        text = strip_markup(text)
        if 2 <= len(text.split()) <= 40 and text != strip_markup(chunk.text):
            queries.setdefault((text.lower(), chunk.chunk_id), PseudoQuery(text, chunk.chunk_id, chunk.doc_id, kind))

    for chunk in sorted(chunks, key=lambda c: (c.doc_id, c.position)):
        if chunk.position == 0:
            add(chunk.title, chunk, "title")
        section = (chunk.doc_id, chunk.heading)
        if chunk.heading and section not in seen_sections:
            add(chunk.heading.split(" > ")[-1], chunk, "heading")
        seen_sections.add(section)
        sentences = [s.strip() for line in chunk.text.splitlines() for s in _SENTENCE.split(line) if s.strip()]
        for sentence in sentences:
            if sentence.endswith("?"):
                add(sentence, chunk, "question")
        candidates = [s for s in sentences[1:] if 5 <= len(s.split()) <= 30 and not s.endswith("?")]
        # Sample even when skipped, so the random stream (and every later choice) does not depend on the chunk kind.
        picked = rng.sample(candidates, min(sentences_per_chunk, len(candidates)))
        # An FAQ answer: its question is the query users will paraphrase; sentences from the answer pull the
        # student towards answer-to-answer matching instead. On the COVID FAQ (203 of 213 titles are questions)
        # skipping them took the student from 0.807 to 0.851 nDCG@10 on tune questions (teacher 0.842).
        if chunk.faq_question:
            continue
        for sentence in picked:
            add(sentence, chunk, "sentence")
    return list(queries.values())


def split_holdout(queries: list[PseudoQuery], ratio: float, seed: int = 0) -> tuple[list[PseudoQuery], list[PseudoQuery]]:
    """(train, held out); held-out queries are never trained on and decide promotion."""
    shuffled = queries[:]
    random.Random(seed).shuffle(shuffled)
    cut = max(1, int(len(shuffled) * ratio)) if len(shuffled) > 1 else 0
    return shuffled[cut:], shuffled[:cut]
