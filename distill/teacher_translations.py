"""The teacher LLM translates a collection's synthetic questions into the languages its customers write (issue 29):
training queries for cross-language retrieval, where a German customer asks an English help center.

The multilingual encoder reads a translated question less well than the English one (emanualqa: nDCG@10 0.51 for
five languages against 0.78 in English after distillation), and no larger multilingual encoder is bundled to teach
it. The teacher LLM writes the translations offline; distillation then asks the student to read each translation as
the teacher encoder reads its English original (distill/run.py), the cross-lingual distillation of Reimers and
Gurevych (2020, "Making monolingual sentence embeddings multilingual").

Cached like the questions (distill/teacher_questions.QuestionCache), one committed row per (question, language),
keyed by the question, the language, the teacher's name and ``PROMPT_VERSION``: a re-distillation translates only
new questions, and a kill loses at most the translation in flight. Questions are taken in a seeded order, each into
every language before the next, so a time budget leaves whole questions, each in all languages.
"""
from __future__ import annotations

import hashlib
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

from tqdm.auto import tqdm

from distill.teacher_questions import Budget, QuestionCache
from ingest.language import detect
from retrieval.answering.engines.base import EngineNotStarted

PROMPT_VERSION = "t1"   # change it whenever PROMPT changes: cached translations of another prompt are not reused
PROMPT = ("Translate the customer's message into {language}. Keep product names, codes and version numbers as they "
          "are. Reply with the translation only.")
# The languages a translation can be asked in: the answer texts' languages (retrieval/answering/phrases.py) and
# more the teacher writes; named in English, as the prompt asks.
LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "de": "German", "fr": "French", "pt": "Portuguese",
                  "it": "Italian", "nl": "Dutch", "zh": "Simplified Chinese", "ja": "Japanese", "ko": "Korean",
                  "pl": "Polish", "sv": "Swedish", "da": "Danish", "fi": "Finnish", "cs": "Czech", "tr": "Turkish",
                  "ru": "Russian", "uk": "Ukrainian", "ar": "Arabic", "vi": "Vietnamese", "id": "Indonesian"}
MAX_LENGTH_RATIO = 3.0   # a translation this many times longer than its question answered it instead
MIN_LANGUAGE_CONFIDENCE = 0.5
DROP_REASONS = ("empty", "not translated", "not a question", "another language", "too long")
QUESTION_MARKS = "?\uff1f\u061f"   # ASCII, full-width (zh, ja), Arabic


@dataclass(frozen=True)
class TranslatedQuestion:
    question: str    # the translation
    source: str      # the question it translates (the teacher encoder reads this one in training)
    chunk_id: str
    language: str


@dataclass
class TranslationReport:
    languages: list[str] = field(default_factory=list)
    questions: int = 0         # source questions in scope
    asked: int = 0             # translations asked of the teacher in this run
    cached: int = 0            # translations answered from the cache
    skipped_by_time: int = 0   # translations left out when the time budget ran out
    failed: int = 0            # teacher calls that raised (asked again next run)
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    teacher_seconds: float = 0.0
    samples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def supported(languages: list[str]) -> list[str]:
    """``languages`` as codes the teacher is asked to translate into; ValueError naming an unknown one."""
    unknown = [language for language in languages if language not in LANGUAGE_NAMES]
    if unknown:
        raise ValueError(f"cannot translate questions into {', '.join(unknown)}: known languages are "
                         f"{', '.join(sorted(LANGUAGE_NAMES))}")
    return list(dict.fromkeys(languages))


def parse_languages(text: str) -> list[str]:
    """"de, fr,ja" -> ["de", "fr", "ja"], checked (`supported`)."""
    return supported([code.strip().lower() for code in text.split(",") if code.strip()])


def translation_key(question: str, language: str, teacher: str) -> str:
    return hashlib.sha256("\x1f".join((teacher, PROMPT_VERSION, language, question)).encode()).hexdigest()


def teacher_messages(question: str, language: str) -> list[dict]:
    return [{"role": "system", "content": PROMPT.format(language=LANGUAGE_NAMES[language])},
            {"role": "user", "content": question}]


def usable_translation(reply: list[str], question: str, language: str) -> tuple[str | None, str | None]:
    """(the translation, None) or (None, why it is dropped). The 1.5B teacher sometimes answers instead of
    translating, or keeps the English (the back-translation check found both, README)."""
    text = " ".join(line.strip() for line in reply if line.strip()).strip().strip("\"'").strip()
    if not text:
        return None, "empty"
    if " ".join(text.lower().split()) == " ".join(question.lower().split()):
        return None, "not translated"
    if len(text) > MAX_LENGTH_RATIO * len(question) + 20:
        return None, "too long"
    # A question that came back as a statement is the teacher answering it ("Bien sûr, je peux vous aider ...", a
    # made-up key for a menu): 137 of emanualqa's first 607 translations. A request form ("请帮我显示电视的主屏幕。")
    # goes with them: a small loss beside the made-up answers.
    if question.rstrip().endswith("?") and not any(mark in text for mark in QUESTION_MARKS):
        return None, "not a question"
    found = detect(text)
    if found is not None and found.language != language and found.confidence >= MIN_LANGUAGE_CONFIDENCE:
        return None, "another language"
    return text, None


def translate_questions(questions: list, languages: list[str], teacher, cache: QuestionCache,
                        budget: Budget = Budget(), show_progress: bool = False,
                        samples: int = 5) -> tuple[list[TranslatedQuestion], TranslationReport]:
    """``questions`` (distill/teacher_questions.SyntheticQuestion) translated into each of ``languages`` by
    ``teacher`` (a GeneratorEngine with a ``name``), cached; ``budget.max_chunks`` bounds the questions taken (a
    seeded sample), ``budget.max_seconds`` the teacher time. A question already in a language is not translated into
    it."""
    languages = supported(languages)
    ordered = sorted(questions, key=lambda q: (q.question, q.chunk_id))
    random.Random(budget.seed).shuffle(ordered)
    if budget.max_chunks is not None:
        ordered = ordered[:budget.max_chunks]
    report = TranslationReport(languages=languages, questions=len(ordered))
    wanted = [(q, language) for q in ordered for language in languages if _own_language(q.question) != language]
    keys = {(q.question, language): translation_key(q.question, language, teacher.name) for q, language in wanted}
    replies = {pair: cache.get(key) for pair, key in keys.items()}
    report.cached = sum(reply is not None for reply in replies.values())
    todo = [(q, language) for q, language in wanted if replies[(q.question, language)] is None]
    started = time.monotonic()
    for question, language in tqdm(todo, desc="teacher translations", unit="question", disable=not show_progress):
        if budget.max_seconds is not None and time.monotonic() - started >= budget.max_seconds:
            report.skipped_by_time = len(todo) - report.asked - report.failed
            break
        start = time.perf_counter()
        try:
            text = teacher.generate(teacher_messages(question.question, language))[0]
        except EngineNotStarted:
            raise
        except Exception:   # one failure (a remote timeout) must not end the run; it is asked next time
            report.failed += 1
            continue
        seconds = time.perf_counter() - start
        lines = [line for line in text.splitlines() if line.strip()]
        cache.put(keys[(question.question, language)], teacher.name, lines, seconds)
        replies[(question.question, language)] = lines
        report.asked += 1
        report.teacher_seconds += seconds
    translated, dropped = [], Counter()
    for question, language in wanted:
        reply = replies[(question.question, language)]
        if reply is None:
            continue
        text, why = usable_translation(reply, question.question, language)
        if why is not None:
            dropped[why] += 1
            continue
        translated.append(TranslatedQuestion(text, question.question, question.chunk_id, language))
    report.kept = len(translated)
    report.dropped = {reason: dropped[reason] for reason in DROP_REASONS if dropped[reason]}
    report.teacher_seconds = round(report.teacher_seconds, 2)
    picked = random.Random(budget.seed).sample(translated, min(samples, len(translated)))
    report.samples = [f"[{t.language}] {t.question}" for t in picked]
    return translated, report


def _own_language(question: str) -> str | None:
    found = detect(question)
    return found.language if found is not None and found.confidence >= MIN_LANGUAGE_CONFIDENCE else None
