"""Distillation as a background job: one at a time, in a worker thread, while queries keep being answered.

Jobs live in memory: a restart forgets them (a run cut short changes nothing the server reads;
see distill/run.py), and `kbqa status` still tells what the serving encoder has not seen.
"""
from __future__ import annotations

import queue
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class Job:
    job_id: str
    collection: str
    state: str = "queued"          # queued | running | succeeded | failed
    stage: str = ""                # the step running now (teacher, mining, training, evaluating, promoting)
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    report: dict | None = None
    error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def eval_questions_file(service, collection: str) -> Path:
    """Where `kbqa eval --remember` keeps a collection's questions; a distillation reports them before and after."""
    from distill.team_eval import EVAL_QUESTIONS

    return service.home.collection_dir(collection) / EVAL_QUESTIONS


def synthetic_questions(service, collection: str, config, show_progress: bool = False,
                        on_stage: Callable[[str], None] | None = None) -> tuple[list, dict]:
    """The teacher LLM's questions for ``collection`` within the config's budget (cached per chunk), and its report;
    ([], {"skipped": why}) when there is no teacher (serve/wiring.py)."""
    from distill.teacher_questions import Budget, QuestionCache, write_questions
    from serve.wiring import teacher_llm, teacher_unavailable

    why = teacher_unavailable(service.settings)
    if why is not None:
        return [], {"skipped": why}
    (on_stage or (lambda name: None))("questions")
    target = service.collection(collection)
    minutes = config.teacher_max_minutes
    budget = Budget(config.teacher_max_chunks, minutes * 60 if minutes is not None else None, config.seed)
    cache = QuestionCache(target.directory / "teacher-questions.sqlite")
    try:
        with teacher_llm(service.settings) as teacher:
            questions, report = write_questions(target.store.all_chunks(), teacher, cache, budget, show_progress)
    finally:
        cache.close()
    return questions, report.to_dict()


def translated_questions(service, collection: str, questions: list, config, show_progress: bool = False,
                         on_stage: Callable[[str], None] | None = None) -> tuple[list, dict]:
    """The teacher LLM's translations of ``questions`` into the languages the collection's customers ask in
    (`Collection.question_languages`), within the config's budget (cached per question and language), and the
    report; ([], {"skipped": why}) when the collection's encoder reads English only, no language other than the
    questions' own is wanted, or there is no teacher. `kbqa teacher-questions --languages` runs it too."""
    from distill.teacher_questions import Budget, QuestionCache
    from distill.teacher_translations import LANGUAGE_NAMES, translate_questions
    from retrieval.models import MULTILINGUAL
    from serve.wiring import teacher_llm, teacher_unavailable

    target = service.collection(collection)
    if target.encoder_model != MULTILINGUAL:
        return [], {"skipped": "the collection's encoder reads English only (`kbqa ingest --encoder multilingual`)"}
    languages = [language for language in target.question_languages if language in LANGUAGE_NAMES]
    if not questions or languages in ([], ["en"]):
        return [], {"skipped": "no teacher questions to translate" if not questions
                    else "the customers ask in English only (`kbqa distill --languages` sets theirs)"}
    why = teacher_unavailable(service.settings)
    if why is not None:
        return [], {"skipped": why}
    (on_stage or (lambda name: None))("translations")
    minutes = config.translate_max_minutes
    cache = QuestionCache(target.directory / "teacher-translations.sqlite")
    try:
        with teacher_llm(service.settings) as teacher:
            budget = Budget(max_seconds=minutes * 60 if minutes is not None else None, seed=config.seed)
            translated, report = translate_questions(questions, languages, teacher, cache, budget, show_progress)
    finally:
        cache.close()
    return translated, report.to_dict()


def run_distill(service, collection: str, config=None, show_progress: bool = False,
                on_stage: Callable[[str], None] | None = None, include_logged: bool = True) -> dict:
    """Distil one collection of ``service`` (distill/run.py; a promotion serves at once), with the team's remembered
    questions (`kbqa eval --remember`) measured before and after: the report, ``eval`` holding {"before", "after"}
    or None when no questions were remembered. The CLI and the HTTP job both run this."""
    from distill.config import DistillConfig
    from distill.run import distill_collection   # training code loads only when a distillation runs
    from distill.team_eval import evaluate, read_questions

    config = config or DistillConfig()

    stage = on_stage or (lambda name: None)
    questions_file = eval_questions_file(service, collection)
    questions = read_questions(questions_file) if questions_file.is_file() else None
    if questions:
        stage("evaluating")
    before = evaluate(service, questions, collection) if questions else None
    logged = service.feedback.questions(collection) if include_logged else []
    synthetic, synthetic_report = synthetic_questions(service, collection, config, show_progress, on_stage)
    translated, translation_report = translated_questions(service, collection, synthetic, config, show_progress,
                                                          on_stage)
    report = distill_collection(service.collection(collection), service.home.models_dir, config,
                                show_progress=show_progress, on_stage=on_stage, logged_questions=logged,
                                synthetic_questions=synthetic, translated_questions=translated)
    report.synthetic, report.translations = synthetic_report, translation_report
    if questions:
        stage("evaluating")
    after = evaluate(service, questions, collection) if questions else None
    return {**report.to_dict(), "eval": {"before": before, "after": after} if questions else None}


def distill_runner(service) -> Callable[[str, Callable[[str], None]], dict]:
    """The job wiring: ``run(collection, on_stage) -> report`` over ``service``."""
    def run(collection: str, on_stage: Callable[[str], None]) -> dict:
        return run_distill(service, collection, on_stage=on_stage)
    return run


class UnknownJob(LookupError):
    """No job with that id (in that collection)."""


class DistillJobs:
    def __init__(self, run: Callable[[str, Callable[[str], None]], dict]):
        """``run(collection, on_stage) -> report dict`` does the work (the service's distill)."""
        self._run = run
        self._jobs: dict[str, Job] = {}
        self._queue: queue.Queue[Job] = queue.Queue()
        self._lock = threading.Lock()
        threading.Thread(target=self._work, name="distill-jobs", daemon=True).start()

    def submit(self, collection: str) -> Job:
        job = Job(uuid.uuid4().hex, collection)
        with self._lock:
            self._jobs[job.job_id] = job
        self._queue.put(job)
        return job

    def get(self, job_id: str, collection: str | None = None) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None or (collection is not None and job.collection != collection):
            raise UnknownJob(f"no distillation job {job_id!r}" + (f" in collection {collection!r}" if collection else ""))
        return job

    def list(self, collection: str) -> list[Job]:
        with self._lock:
            return [j for j in self._jobs.values() if j.collection == collection]

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            job.state, job.started = "running", time.time()
            try:
                job.report = self._run(job.collection, lambda name: setattr(job, "stage", name))
                job.state = "succeeded"
            except Exception as exc:  # the job fails, the server goes on; the reason is kept for GET
                job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
            job.finished = time.time()
