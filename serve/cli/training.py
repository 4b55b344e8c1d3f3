"""`kbqa distill`, `train-generator`, `train-answerability`: the models that learn from a collection."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from serve.cli.common import print_training, service


def cmd_distill(args) -> int:
    from distill.config import DistillConfig
    from distill.team_eval import format_table
    from serve.jobs import run_distill

    config = DistillConfig(full=args.full, epochs=args.epochs, max_examples=args.max_examples)
    running = service(with_generator=False)
    if args.languages is not None:   # kept: later runs and the API's distill jobs translate into them too
        from distill.teacher_translations import parse_languages

        running.collection(args.collection).set_question_languages(parse_languages(args.languages))
    report = run_distill(running, args.collection, config, show_progress=not args.json,
                         include_logged=not args.no_logged)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    if report["eval"]:
        print(format_table(report["eval"]["after"], report["eval"]["before"]), end="\n\n")
    print(f"collection {report['collection']}: {report['mode']} distillation"
          + (f", student {report['version']}" if report["version"] else "") + " -> "
          + ("PROMOTED" if report["promoted"] else "not promoted") + f": {report['reason']}")
    if report["seconds"]:
        print(f"  {report['logged_questions']} logged customer questions ({report['logged_held_out']} held out), "
              f"{report['pseudo_queries']} pseudo-queries ({report['held_out']} held out), {report['triples']} "
              f"triples, {report['teacher_texts_encoded']} texts encoded by the teacher; seconds {report['seconds']}")
    synthetic = report["synthetic"]
    if "skipped" in synthetic:
        print(f"  no synthetic questions: {synthetic['skipped']}")
    elif synthetic:
        print(f"  teacher LLM: {synthetic['asked']} chunks asked, {synthetic['cached']} cached, "
              f"{synthetic['skipped_by_time']} left for the next run; {synthetic['kept']} of {synthetic['written']} "
              f"questions kept; {report['synthetic_questions']} on trained chunks "
              f"({report['synthetic_held_out']} held out)")
    translations = report["translations"]
    if "skipped" in translations:
        print(f"  no translated questions: {translations['skipped']}")
    elif translations:
        print(f"  translations into {', '.join(translations['languages'])}: {translations['asked']} asked, "
              f"{translations['cached']} cached, {translations['skipped_by_time']} left for the next run; "
              f"{report['translated_questions']} on trained chunks ({report['translated_held_out']} held out)")
    if report.get("fusion"):
        print(f"  hybrid search: {report['fusion']['reason']}")
    return 0


def cmd_train_generator(args) -> int:
    from distill.generator_data import training_examples
    from distill.generator_train import SHIPPED_EXAMPLES, GeneratorTrainConfig, train_generator
    from retrieval.encoder import pick_device
    from retrieval.models import GENERATOR_BASE, model_path

    running = service(with_generator=False)
    has_collection = args.collection in running.collection_names()
    if args.from_feedback and not has_collection:
        raise ValueError(f"--from-feedback needs collection {args.collection!r}, which does not exist")
    # Answers rated helpful, and answers an admin corrected (PATCH /v1/feedback/{id}).
    feedback = running.feedback.training_answers(args.collection) if args.from_feedback else None
    examples, counts = training_examples(None if args.no_shipped else SHIPPED_EXAMPLES,
                                         [Path(p) for p in args.examples or []],
                                         running.collection(args.collection) if has_collection else None,
                                         feedback, running.settings.prompt_passages)
    config = GeneratorTrainConfig(epochs=args.epochs, max_examples=args.max_examples, lr=args.lr)
    print(f"{len(examples)} training examples ({counts['mined']} mined from the FAQ headings of collection "
          f"{args.collection!r}, {counts['feedback']} from its feedback); device {pick_device()}", file=sys.stderr)
    models_dir = running.home.models_dir
    report = train_generator(model_path(models_dir, GENERATOR_BASE), examples, models_dir, config,
                             device=pick_device(), show_progress=not args.json,
                             source=f"shipped examples + {counts['mined']} FAQ pairs of {args.collection}"
                                    + (f" + {counts['feedback']} feedback answers" if args.from_feedback else ""),
                             activate=args.activate)
    summary = (f"generator adapter {report['version']}: {report['examples']} examples in {report['seconds']:.0f} s, "
               f"final loss {report['loss_per_step'][-1]}")
    return print_training(report, args.json, summary, "benchs/quality/answer_quality.py --adapter",
                          "KBQA_GENERATOR_ADAPTER")


def cmd_train_answerability(args) -> int:
    from distill.answerability_train import (SHIPPED_PAIRS, AnswerabilityTrainConfig, read_pairs,
                                             train_answerability)
    from retrieval.encoder import pick_device
    from retrieval.models import STUDENT_START, model_path

    models_dir = service(with_generator=False).home.models_dir
    pairs = [] if args.no_shipped else read_pairs(SHIPPED_PAIRS)
    for path in args.pairs or []:
        pairs += read_pairs(Path(path))
    config = AnswerabilityTrainConfig(**{k: v for k, v in (("epochs", args.epochs), ("lr", args.lr)) if v is not None})
    print(f"{len(pairs)} (question, passage) pairs, {sum(p['label'] for p in pairs)} holding the answer; "
          f"device {pick_device()}", file=sys.stderr)
    report = train_answerability(model_path(models_dir, STUDENT_START), pairs, models_dir, config,
                                 device=pick_device(), show_progress=not args.json,
                                 source="shipped pairs" if not args.no_shipped else "own pairs",
                                 activate=args.activate)
    summary = (f"answerability scorer {report['version']}: {report['pairs']} pairs in {report['seconds']:.0f} s, "
               f"validation AUC {report['valid_auc']}")
    return print_training(report, args.json, summary, "benchs/quality/answerability_quality.py --scorer",
                          "KBQA_ANSWERABILITY_SCORER")


def cmd_teacher_questions(args) -> int:
    from distill.config import DistillConfig
    from distill.teacher_questions import Budget, QuestionCache, write_questions
    from distill.teacher_translations import parse_languages
    from serve.jobs import translated_questions
    from serve.wiring import teacher_llm

    running = service(with_generator=False)
    collection = running.collection(args.collection)   # an unknown collection fails before the teacher starts
    languages = parse_languages(args.languages) if args.languages else None   # so does an unknown language
    budget = Budget(args.max_chunks, args.max_minutes * 60 if args.max_minutes is not None else None)
    cache = QuestionCache(collection.directory / "teacher-questions.sqlite")
    try:
        with teacher_llm(running.settings) as teacher:
            questions, report = write_questions(collection.store.all_chunks(), teacher, cache, budget,
                                                show_progress=not args.json)
    finally:
        cache.close()
    translated, translation_report = [], None
    if languages:   # kept as the languages the customers ask in, as `kbqa distill --languages` keeps them
        collection.set_question_languages(languages)
        translated, translation_report = translated_questions(
            running, collection.name, questions, DistillConfig(translate_max_minutes=args.translate_minutes),
            show_progress=not args.json)
    if args.json:
        out = {**report.to_dict(), "questions": [q.__dict__ for q in questions]}
        if translation_report is not None:
            out["translations"] = {**translation_report, "questions": [t.__dict__ for t in translated]}
        print(json.dumps(out, indent=1, ensure_ascii=False))
        return 0
    drops = ", ".join(f"{reason} {n}" for reason, n in report.dropped.items()) or "none"
    print(f"collection {args.collection}: {report.chunks} chunks ({report.asked} asked, {report.cached} cached, "
          f"{report.skipped_by_time} left for time, {report.failed} failed); {report.written} lines written, "
          f"{report.kept} questions kept; dropped: {drops}; teacher {report.teacher_seconds:.0f} s")
    for sample in report.samples:
        print(f"  - {sample}")
    if translation_report is not None:
        print_translations(translation_report)
    return 0


def print_translations(report: dict) -> None:
    if "skipped" in report:
        print(f"no translations: {report['skipped']}")
        return
    drops = ", ".join(f"{reason} {n}" for reason, n in report["dropped"].items()) or "none"
    print(f"translations into {', '.join(report['languages'])}: {report['questions']} questions ({report['asked']} "
          f"translations asked, {report['cached']} cached, {report['skipped_by_time']} left for time, "
          f"{report['failed']} failed); {report['kept']} kept; dropped: {drops}; "
          f"teacher {report['teacher_seconds']:.0f} s")
    for sample in report["samples"]:
        print(f"  - {sample}")


def register(sub) -> None:
    p = sub.add_parser("distill", help="distil the teacher into this collection's encoder; promote it if better")
    p.add_argument("--collection", default="default")
    p.add_argument("--full", action="store_true", help="start over (from --student) instead of the current student")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-examples", type=int, default=1200)
    p.add_argument("--no-logged", action="store_true", help="leave the customers' logged questions out")
    p.add_argument("--languages", help="the languages customers ask in (codes: de,fr,ja; kept for later runs): a "
                                       "multilingual collection learns from the teacher's questions translated into "
                                       "them (default: its documents' languages)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("teacher-questions",
                       help="the teacher LLM (KBQA_TEACHER_URL, or `kbqa prepare --teacher`) writes customer questions "
                            "for the collection's chunks")
    p.add_argument("--collection", default="default")
    p.add_argument("--max-chunks", type=int, help="a seeded sample of this many chunks (default: all)")
    p.add_argument("--max-minutes", type=float, help="stop asking after this much teacher time; rerun to go on")
    p.add_argument("--languages", help="also translate the questions into these languages (codes: de,fr,ja), for "
                                       "customers who ask in them; a multilingual collection's distillation learns "
                                       "from the translations")
    p.add_argument("--translate-minutes", type=float, help="stop translating after this much teacher time")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_teacher_questions)

    p = sub.add_parser("train-generator", help="fine-tune the generator (LoRA) on grounded, cited answers")
    p.add_argument("--collection", default="default", help="also learn from this collection's FAQ headings")
    p.add_argument("--examples", action="append", help="extra training examples (JSONL), repeatable")
    p.add_argument("--no-shipped", action="store_true", help="skip the examples shipped with kbqa")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-examples", type=int)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--activate", action="store_true", help="serve the new adapter from the next start")
    p.add_argument("--from-feedback", action="store_true",
                   help="also learn from this collection's answers rated helpful and answers an admin corrected")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_train_generator)

    p = sub.add_parser("train-answerability",
                       help="fine-tune the cross-encoder that says whether the passages hold the answer")
    p.add_argument("--pairs", action="append", help="extra (question, title, text, label) pairs (JSONL), repeatable")
    p.add_argument("--no-shipped", action="store_true", help="skip the pairs shipped with kbqa")
    p.add_argument("--epochs", type=int, help="default: distill/answerability_train.py:AnswerabilityTrainConfig")
    p.add_argument("--lr", type=float)
    p.add_argument("--activate", action="store_true", help="serve the new scorer from the next start")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_train_answerability)
