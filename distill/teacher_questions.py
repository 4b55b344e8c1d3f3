"""A teacher LLM writes the questions customers would ask of each chunk, and which of the chunk's sentences answer
them: training queries that read like a customer's, not like a title or a heading (distill/pseudo_queries.py).

The teacher is any ``GeneratorEngine`` (retrieval/answering/engines/): an OpenAI-compatible endpoint through
``RemoteGenerator``, which is also how a local GGUF is served (llama.cpp's server, engines/llama_server.py). Every
chunk's reply is cached in SQLite, keyed by the chunk's text, the teacher's name and ``PROMPT_VERSION``, and committed
as soon as it is written: re-running after a docs change asks only about new or changed chunks, and a kill loses at
most the chunk in flight. ``Budget`` bounds a run by a seeded sample of chunks and by wall time.

Replies are filtered before use; what is dropped is counted by reason (``DROP_REASONS``), so a team can see what the
teacher wrote that was not a usable question.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
import sqlite3
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from retrieval.answering.engines.base import EngineNotStarted
from retrieval.answering.grounding import content_words, normalised, split_sentences

PROMPT_VERSION = "q1"   # change it whenever PROMPT changes: cached replies of another prompt are not reused
QUESTIONS_PER_CHUNK = 3
PROMPT = ("You write the questions customers ask a support team. Read the help-center passage and write up to {n} "
          "different questions a customer could ask that this passage answers. Write them as a customer would, in "
          "their own words, not the passage's title. One question a line, each ending with a question mark, "
          "nothing else.")
MAX_QUESTION_WORDS = 30
MIN_QUESTION_WORDS = 3
DROP_REASONS = ("not a question", "too short", "too long", "copies the title or a heading", "refers to the passage",
                "asks the customer", "duplicate", "no answer in the chunk")
# A customer never saw the passage: "the third-party integrations mentioned in the passage", "the script URL from
# Step 1" (3 of 30 kept questions the 1.5B teacher wrote for kb/ before this filter) cannot be asked of a search box.
_META = re.compile(r"\b(passages?|mentioned (in|above)|the (text|article) above|from step \d+)\b", re.IGNORECASE)
# Nor the document it came from: "How can a remote attacker exploit this vulnerability?", "How do I recover from this
# problem?" (3 of 30 kept techqa questions) name nothing a search could find, unless an earlier sentence of the
# question says what it is ("I hear a popping noise from my TV. How can I resolve this issue?").
_DEMONSTRATIVE = re.compile(r"\bth(is|ese) (vulnerabilit(y|ies)|problems?|issues?|errors?|fix(es)?|apars?|technotes?|"
                            r"documents?|workarounds?|security bulletins?)\b", re.IGNORECASE)
# The teacher turned agent: "Do you have any questions about face masks ...?", "Is there a specific feature pack that
# you would like to install?", "... the consoleProperties.xml file so I can assist you" (2 of 30 kept covid
# questions, 3 of 30 techqa ones before), "... the error message you're encountering?" (techqa).
_TO_CUSTOMER = re.compile(r"^(do you have any (questions|concerns)|would you like|are you (interested|looking))\b"
                          r"|\b(you're|you are) (encountering|seeing|getting|experiencing)\b|\bthe steps you took\b"
                          r"|\b(you would like to|(so|that) i can (assist|help) you)\b", re.IGNORECASE)
# Line labels the teacher adds: "- ", "2.", "Q1:", "Question 2:", "Customer 3:" (1 of 30 kept emanualqa questions).
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d{1,2}[.)]|q\d*[:.)]|question\s*\d*[:.)]|customer\s*\d*\s*:)\s*", re.IGNORECASE)


@dataclass(frozen=True)
class Budget:
    """At most ``max_chunks`` chunks (a seeded sample; None: all) and ``max_seconds`` of teacher time (None: no
    limit). Chunks already in the cache cost nothing and are always used."""
    max_chunks: int | None = None
    max_seconds: float | None = None
    seed: int = 0


@dataclass(frozen=True)
class SyntheticQuestion:
    question: str
    chunk_id: str
    answer: str   # the chunk's sentence sharing the most content words with the question


@dataclass
class QuestionReport:
    chunks: int = 0            # chunks in scope (after the budget's sample)
    asked: int = 0             # chunks sent to the teacher in this run
    cached: int = 0            # chunks answered from the cache
    skipped_by_time: int = 0   # chunks left out when max_seconds ran out
    failed: int = 0            # teacher calls that raised (left out of the cache: asked again next run)
    written: int = 0           # question lines the teacher wrote, over all used chunks
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    teacher_seconds: float = 0.0
    samples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _question_part(line: str) -> str:
    """The question a line opens with. On FAQ chunks the 1.5B teacher often writes the question and its answer on one
    line ("Can the virus spread through sewage? Yes, it can. ..."): 104 of 252 covid lines were lost as "not a
    question" before this cut."""
    mark = line.find("?")
    return line[:mark + 1] if 0 < mark < len(line) - 1 else line


def filter_questions(lines: list[str], chunk, seen: set[str]) -> tuple[list[SyntheticQuestion], Counter]:
    """The usable questions among the teacher's ``lines`` for ``chunk``, each with its answering sentence, and what
    was dropped by reason. ``seen``: normalised questions kept so far in this collection (updated)."""
    dropped: Counter = Counter()
    headings = {normalised(part) for part in [chunk.context, chunk.title, *chunk.heading.split(" > ")] if part}
    sentences = split_sentences(chunk.text)
    kept = []
    for line in lines:
        question = _question_part(_BULLET.sub("", line.strip()).strip().strip("\"'").strip())
        words = question.split()
        normal = normalised(question)
        if not question.endswith("?"):
            reason = "not a question"
        elif len(words) < MIN_QUESTION_WORDS:
            reason = "too short"
        elif len(words) > MAX_QUESTION_WORDS:
            reason = "too long"
        elif normal in headings:
            reason = "copies the title or a heading"
        elif _META.search(question) or (_DEMONSTRATIVE.search(question) and len(split_sentences(question)) == 1):
            reason = "refers to the passage"
        elif _TO_CUSTOMER.search(question):
            reason = "asks the customer"
        elif normal in seen:
            reason = "duplicate"
        else:
            asked = content_words(question)
            overlaps = [len(asked & content_words(s)) for s in sentences]
            if not overlaps or max(overlaps) == 0:
                reason = "no answer in the chunk"
            else:
                seen.add(normal)
                kept.append(SyntheticQuestion(question, chunk.chunk_id, sentences[overlaps.index(max(overlaps))]))
                continue
        dropped[reason] += 1
    return kept, dropped


def chunk_key(chunk, teacher: str) -> str:
    return hashlib.sha256("\x1f".join((teacher, PROMPT_VERSION, chunk.context, chunk.text)).encode()).hexdigest()


class QuestionCache:
    """Teacher replies by chunk key, one committed row per chunk (WAL: a reader never sees half a write)."""

    def __init__(self, path: Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, teacher TEXT NOT NULL, "
                         "lines TEXT NOT NULL, seconds REAL NOT NULL, created REAL NOT NULL)")

    def get(self, key: str) -> list[str] | None:
        row = self._db.execute("SELECT lines FROM replies WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, teacher: str, lines: list[str], seconds: float) -> None:
        self._db.execute("INSERT OR REPLACE INTO replies (key, teacher, lines, seconds, created) VALUES (?, ?, ?, ?, ?)",
                         (key, teacher, json.dumps(lines), seconds, time.time()))

    def teachers(self) -> list[str]:
        """The teachers whose replies are kept, most replies first."""
        return [row[0] for row in self._db.execute(
            "SELECT teacher FROM replies GROUP BY teacher ORDER BY COUNT(*) DESC")]

    def close(self) -> None:
        self._db.close()


def teacher_messages(chunk, n: int = QUESTIONS_PER_CHUNK) -> list[dict]:
    return [{"role": "system", "content": PROMPT.format(n=n)},
            {"role": "user", "content": f"{chunk.context}\n\n{chunk.text}"}]


def write_questions(chunks: list, teacher, cache: QuestionCache, budget: Budget = Budget(),
                    show_progress: bool = False, samples: int = 5) -> tuple[list[SyntheticQuestion], QuestionReport]:
    """Synthetic questions for ``chunks`` (ingest/records.Chunk) from ``teacher`` (a GeneratorEngine with a
    ``name``), cached; the report says what was asked, reused, kept and dropped."""
    chunks = sorted(chunks, key=lambda c: c.chunk_id)   # the sample does not depend on the store's order
    if budget.max_chunks is not None and len(chunks) > budget.max_chunks:
        chunks = random.Random(budget.seed).sample(chunks, budget.max_chunks)
    report = QuestionReport(chunks=len(chunks))
    keys = {c.chunk_id: chunk_key(c, teacher.name) for c in chunks}
    replies = {c.chunk_id: cache.get(keys[c.chunk_id]) for c in chunks}
    report.cached = sum(lines is not None for lines in replies.values())
    todo = [c for c in chunks if replies[c.chunk_id] is None]
    started = time.monotonic()
    for chunk in tqdm(todo, desc="teacher questions", unit="chunk", disable=not show_progress):
        if budget.max_seconds is not None and time.monotonic() - started >= budget.max_seconds:
            report.skipped_by_time = len(todo) - report.asked - report.failed
            break
        start = time.perf_counter()
        try:
            text = teacher.generate(teacher_messages(chunk))[0]
        except EngineNotStarted:   # no teacher at all: the run ends, rather than fail chunk after chunk
            raise
        except Exception:   # one chunk's failure (a remote timeout) must not end the run; it is asked next time
            report.failed += 1
            continue
        seconds = time.perf_counter() - start
        lines = [line for line in text.splitlines() if line.strip()]
        cache.put(keys[chunk.chunk_id], teacher.name, lines, seconds)
        replies[chunk.chunk_id] = lines
        report.asked += 1
        report.teacher_seconds += seconds
    questions, dropped, report.written = _filtered(chunks, replies)
    report.kept = len(questions)
    report.dropped = {reason: dropped[reason] for reason in DROP_REASONS if dropped[reason]}
    report.teacher_seconds = round(report.teacher_seconds, 2)
    report.samples = [q.question for q in random.Random(budget.seed).sample(questions, min(samples, len(questions)))]
    return questions, report


def _filtered(chunks: list, replies: dict) -> tuple[list[SyntheticQuestion], Counter, int]:
    """(kept questions, drops by reason, lines written) over the chunks that have a reply."""
    questions, dropped, seen, written = [], Counter(), set(), 0
    for chunk in chunks:
        lines = replies.get(chunk.chunk_id)
        if lines is None:
            continue
        written += len(lines)
        kept, why = filter_questions(lines, chunk, seen)
        questions += kept
        dropped.update(why)
    return questions, dropped, written


def cached_questions(chunks: list, cache: QuestionCache) -> list[SyntheticQuestion]:
    """The kept questions the cache already holds for ``chunks``, from whichever teacher wrote each chunk's (the one
    with the most replies first); no teacher is asked."""
    replies: dict = {}
    for teacher in cache.teachers():
        for chunk in chunks:
            if chunk.chunk_id not in replies:
                lines = cache.get(chunk_key(chunk, teacher))
                if lines is not None:
                    replies[chunk.chunk_id] = lines
    return _filtered(chunks, replies)[0]


HELD_OUT_WANTED = 40      # held-out questions enough to fit the hybrid weight on (distill/fusion_fit.py)
MAX_HOLDOUT_RATIO = 0.3


def holdout_ratio(questions: int, ratio: float = 0.1) -> float:
    """The share of ``questions`` synthetic questions held out: ``ratio``, raised (up to MAX_HOLDOUT_RATIO) so that
    about HELD_OUT_WANTED are; covid's 222 kept questions held out 19 at 10%, too few to fit the weight on. As the
    cache grows the share only falls, so a question once trained on is not held out later."""
    return min(MAX_HOLDOUT_RATIO, max(ratio, HELD_OUT_WANTED / questions)) if questions else ratio


def is_held_out(question: str, ratio: float = 0.1) -> bool:
    """Whether a synthetic question is kept out of training, by a hash of its text: the same question is held out in
    every run, whatever else the teacher wrote or which chunks changed, so no later student is trained on what an
    earlier one was judged by (promotion, the fusion weight, `kbqa eval --synthetic`)."""
    return int(hashlib.sha256(normalised(question).encode()).hexdigest()[:8], 16) < ratio * 16 ** 8


def split_held_out(questions: list, ratio: float = 0.1, text=lambda q: q.question) -> tuple[list, list]:
    """(trained on, held out): the one split of synthetic questions, by ``is_held_out`` at ``holdout_ratio``;
    ``text`` reads a question's text (SyntheticQuestion.question, PseudoQuery.text)."""
    share = holdout_ratio(len(questions), ratio)
    held = [is_held_out(text(q), share) for q in questions]
    return [q for q, h in zip(questions, held) if not h], [q for q, h in zip(questions, held) if h]


def held_out_questions(questions: list[SyntheticQuestion], ratio: float = 0.1) -> list[SyntheticQuestion]:
    """The questions distillation holds out of training (distill/run.py): what a label-free health check may ask
    (`kbqa eval --synthetic`)."""
    return split_held_out(questions, ratio)[1]
