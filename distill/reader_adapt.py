"""The sentence scorer adapted to one collection on the teacher's synthetic questions, label-free (issue 27).

The shipped scorer (a MiniLM cross-encoder, retrieval/answering/answerability.py) learnt what answers a question on
three other domains. A collection's synthetic questions (distill/teacher_questions.py) say, for its own documents,
which unit answers which question: the teacher wrote the question from the chunk, and the chunk's unit sharing most
content words with it is aligned as its answer. Pairs, in the shipped scorer's graded target (the share of the
unit's content words the answer holds):

- every unit of the source chunk, graded against the aligned answer unit (1.0 for that unit itself);
- the units of the first ``negative_passages`` retrieved passages of *other* documents, target 0: what retrieval puts
  beside the answer on this collection, the passages a knowledge-gap question is left with.

The scorer continues from the shipped (or any) scorer for one epoch at a low learning rate, so it keeps what it knew
and learns the collection's wording.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from retrieval.answering.grounding import content_words
from retrieval.answering.selection import is_heading, split_units

NEGATIVE_PASSAGES = 2


def graded(unit: str, answer_words: set[str]) -> float:
    words = content_words(unit)
    return round(len(words & answer_words) / len(words), 4) if words else 0.0


def synthetic_pairs(questions: list, chunk_of: dict, search: Callable[[str], list],
                    negative_passages: int = NEGATIVE_PASSAGES) -> list[dict]:
    """(question, title, text, label, target, source) pairs of ``questions`` (SyntheticQuestion); ``chunk_of``: chunk
    id -> Chunk; ``search``: the collection's ranked SearchHits. ``source`` is the chunk id: pairs of one question
    stay on one side of the validation split."""
    pairs = []
    for q in questions:
        chunk = chunk_of[q.chunk_id]
        answer = content_words(q.answer)
        for unit in split_units(chunk.text, 0, chunk.context):
            if is_heading(unit, chunk.context):
                continue
            target = 1.0 if unit.text == q.answer else graded(unit.text, answer)
            pairs.append({"question": q.question, "title": chunk.context, "text": unit.text,
                          "label": float(target >= 0.5), "target": target, "source": q.chunk_id})
        others = [h.chunk for h in search(q.question) if h.chunk.doc_id != chunk.doc_id][:negative_passages]
        for other in others:
            for unit in split_units(other.text, 0, other.context):
                if not is_heading(unit, other.context):
                    pairs.append({"question": q.question, "title": other.context, "text": unit.text, "label": 0.0,
                                  "target": 0.0, "source": q.chunk_id})
    return pairs


@dataclass(frozen=True)
class AdaptConfig:
    epochs: int = 1
    lr: float = 2e-5          # a quarter of the from-MiniLM rate: adapt, do not start over
    batch_size: int = 32
    max_length: int = 128
    validation_share: float = 0.15


def adapt_scorer(base: Path, pairs: list[dict], out: Path, config: AdaptConfig = AdaptConfig(),
                 show_progress: bool = False, source: str = "synthetic questions") -> Path:
    """Fine-tune the scorer in folder ``base`` on ``pairs``; publish it as the next version under ``out``
    (``out/sentence-scorer/vNNNN``) and return that folder."""
    from distill.answerability_train import AnswerabilityTrainConfig, train_answerability
    from retrieval.answering.registry import SENTENCE_SCORERS

    training = AnswerabilityTrainConfig(epochs=config.epochs, batch_size=config.batch_size,
                                        max_length=config.max_length, lr=config.lr,
                                        validation_share=config.validation_share, target="target")
    report = train_answerability(base, pairs, out, training, show_progress=show_progress, source=source,
                                 activate=False, registry=SENTENCE_SCORERS,
                                 command="python -m benchs.quality.reader_adapt")
    return out / SENTENCE_SCORERS / report["version"]
