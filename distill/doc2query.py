"""doc2query: a question the base generator writes for a chunk, used as a pseudo-query in place of a salient sentence.

Opt-in (`DistillConfig(generated_questions=True)`); measured against salient sentences in the README. The base
SmolLM2 (not the answering adapter) writes them; about half its outputs are not questions ("The answer to this
question is: ..."), so only a single line ending in "?" of 3-25 words is kept, and the chunk falls back to its
salient sentence otherwise.
"""
from __future__ import annotations

import re
from pathlib import Path

from ingest.records import Chunk

SYSTEM = ("You write the question a customer would ask, answered by the given help text. "
          "Reply with one short question only.")
PASSAGE_WORDS = 150     # the chunk's opening; keeps the prompt (and the time per chunk) small
MAX_NEW_TOKENS = 32
_NOT_A_QUESTION = re.compile(r"\banswer\b|\bquestion\b|\bpassage\b|\bhelp text\b", re.IGNORECASE)


def question_messages(chunk: Chunk) -> list[dict]:
    text = " ".join(chunk.text.split()[:PASSAGE_WORDS])
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"Help text:\n{text}\n\nQuestion:"}]


def clean_question(raw: str) -> str | None:
    """The generated question, or None when the output is not a usable one."""
    lines = [line.strip() for line in raw.strip().splitlines() if line.strip()]
    if not lines:
        return None
    question = lines[0].strip(" \"'")
    if not question.endswith("?") or not 3 <= len(question.split()) <= 25 or _NOT_A_QUESTION.search(question):
        return None
    return question


class QuestionWriter:
    """chunk -> a generated question or None; counts how many outputs were kept."""

    def __init__(self, generator):
        self.generator = generator
        self.asked = self.kept = 0

    def __call__(self, chunk: Chunk) -> str | None:
        self.asked += 1
        question = clean_question(self.generator.generate(question_messages(chunk))[0])
        self.kept += question is not None
        return question


def load_question_writer(models_dir: Path) -> QuestionWriter:
    from retrieval.models import GENERATOR_BASE, model_path
    from retrieval.generation.backend import load_generator

    return QuestionWriter(load_generator(models_dir, model_path(models_dir, GENERATOR_BASE),
                                         max_new_tokens=MAX_NEW_TOKENS))
