"""`kbqa eval` and `kbqa gaps`: how well a collection answers its team's questions, and what its docs miss."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from serve.cli.common import service
from serve.cli.keys import filter_arg


def cmd_eval(args) -> int:
    from tqdm import tqdm

    from distill.team_eval import evaluate, format_table, read_questions
    from serve.jobs import eval_questions_file

    if bool(args.questions) == args.synthetic:
        raise ValueError("give a questions file, or --synthetic for the teacher LLM's held-out questions")
    running = service(with_generator=args.ask)
    target = running.collection(args.collection)   # an unknown collection fails here, before any work
    questions = read_questions(Path(args.questions)) if args.questions else _synthetic(target)
    report = evaluate(running, questions, args.collection, ask=args.ask, filter=args.filter,
                      progress=lambda items: tqdm(items, desc="questions", disable=args.json, file=sys.stderr))
    if args.remember and args.questions:
        shutil.copyfile(args.questions, eval_questions_file(running, args.collection))
    print(json.dumps(report, indent=1) if args.json else format_table(report))
    return 0


def _synthetic(collection) -> list:
    """The teacher LLM's held-out questions of ``collection`` as eval questions (their chunk's document the gold),
    from the cache `kbqa distill` / `kbqa teacher-questions` filled: no teacher runs here."""
    from distill.config import DistillConfig
    from distill.team_eval import EvalQuestion
    from distill.teacher_questions import QuestionCache, cached_questions, held_out_questions

    path = collection.directory / "teacher-questions.sqlite"
    if not path.is_file():
        raise ValueError(f"collection {collection.name!r} has no synthetic questions yet: run `kbqa teacher-questions` "
                         "or `kbqa distill` with a teacher (KBQA_TEACHER_URL, or `kbqa prepare --teacher`)")
    cache = QuestionCache(path)
    try:
        chunks = collection.store.all_chunks()
        questions = cached_questions(chunks, cache)
    finally:
        cache.close()
    doc_of = {c.chunk_id: c.doc_id for c in chunks}
    held = held_out_questions(questions, DistillConfig().holdout_ratio)
    if not held:
        raise ValueError(f"collection {collection.name!r}: no held-out synthetic questions for its current chunks (one in ten is held out)")
    return [EvalQuestion(q.question, q.answer, [doc_of[q.chunk_id]]) for q in held]


def cmd_gaps(args) -> int:
    from serve.gaps import format_report, gap_report

    # The answering parts too: a cluster is "covered" once its questions are answered by the same gates as the API.
    report = gap_report(service(with_generator=True), args.collection, args.since, args.threshold)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


def register(sub) -> None:
    from serve.gaps import DEFAULT_THRESHOLD

    p = sub.add_parser("eval", help="quality on your own questions (JSONL: question, answer, gold_ids, answerable)")
    p.add_argument("questions", nargs="?", help="JSONL, one {question, answer?, gold_ids?, answerable?} a line")
    p.add_argument("--synthetic", action="store_true",
                   help="instead of a file: the teacher LLM's held-out questions of the collection (no labels needed)")
    p.add_argument("--collection", default="default")
    p.add_argument("--ask", action="store_true", help="also answer each question (answer quality, abstention)")
    p.add_argument("--filter", type=filter_arg, help="search and answer within the documents this JSON metadata "
                   "filter keeps (README \"Filters\")")
    p.add_argument("--remember", action="store_true",
                   help="keep this file as the collection's questions: `kbqa distill` reports them before and after")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("gaps", help="what the docs are missing: unanswered or unhelpful questions, clustered")
    p.add_argument("--collection", default="default")
    p.add_argument("--since", type=float, default=30.0, help="days of the answer log to read")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="cosine to a cluster's centre to join it")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_gaps)
