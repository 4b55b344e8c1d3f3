"""Distilled student vs BM25, MiniLM and the teacher on each dataset's real questions, side by side.

    python -m benchs.quality.distill_quality --data PATH/TO/shared/data [--datasets emanualqa covid_faq_deepset techqa_dev]
                                     [--log-tune]

The student is trained on the dataset's kb.jsonl only (pseudo-queries from its chunks, never its
questions), exactly as `kbqa distill --full` does, on a copy of the MiniLM collection. Scores are on
the report half of the questions (benchs/common.split_of); the tune half is printed too.
Also: query/passage encoding throughput of the student vs the teacher (same texts, same batch).
With --log-tune (issue 17, 3), a second student per set is distilled, in the same run, with the tune half of the
set's questions logged as if customers had asked them (`kbqa distill`'s logged questions: teacher-labelled, never
the gold ids); its rows, ``student + logged``, are scored on the report half it never saw.
With --synthetic, another student per set is distilled, in the same run, with the teacher LLM's synthetic questions
of the set's chunks (distill/teacher_questions.py; the teacher `kbqa distill` would use: KBQA_TEACHER_URL or the GGUF
of `kbqa prepare --teacher`; cached in the set's collection, so a rerun asks nothing); its rows are
``student + synthetic``. ``--teacher-minutes`` bounds the teacher per set (a seeded order of chunks).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import threading
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import (BENCH_HOME, dataset_files, load_questions, mean, open_collection, publish, ranked_docs,
                           split_of)
from distill.metrics import paired_interval, ranking_metrics
from distill.config import DistillConfig
from distill.run import distill_collection
from distill.teacher_cache import TeacherCache
from retrieval.collection import Collection
from retrieval.encoder import SentenceEncoder
from retrieval.fusion import EQUAL_WEIGHT
from retrieval.models import TEACHER, model_path
from serve.service import KbqaService
from serve.settings import Settings

KEYS = ("hit@1", "hit@5", "nDCG@10", "MRR@10")


def teacher_rankings(collection: Collection, cache: TeacherCache, questions: list[dict]) -> list[list[str]]:
    chunks = collection.store.all_chunks()
    passages = cache.encode([c.embedding_text() for c in chunks], show_progress=True)
    queries = cache.encode([q["question"] for q in questions], show_progress=True)
    order = np.argsort(-(queries @ passages.T), axis=1)[:, :40]
    return [[chunks[i].doc_id for i in row] for row in order]


def throughput(encoder, texts: list[str]) -> float:
    encoder.encode(texts[:16])  # warm-up
    start = time.perf_counter()
    encoder.encode(texts, batch_size=32)
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--datasets", nargs="*", default=["emanualqa", "covid_faq_deepset", "techqa_dev"])
    parser.add_argument("--out", type=Path, default=Path("benchs/results/distill_quality.md"))
    parser.add_argument("--config", default="{}", help='DistillConfig overrides as JSON, e.g. \'{"sentences_per_chunk": 0}\'')
    parser.add_argument("--log-tune", action="store_true", help="also distil with the tune questions as the answer log")
    parser.add_argument("--synthetic", action="store_true", help="also distil with the teacher LLM's questions")
    parser.add_argument("--teacher-minutes", type=float, help="with --synthetic: teacher time per set (default: all)")
    args = parser.parse_args()
    service = KbqaService.load(Settings(home=BENCH_HOME), with_generator=False)
    teacher = SentenceEncoder(model_path(BENCH_HOME / "models", TEACHER))
    lines = ["| dataset | split | n | system | " + " | ".join(KEYS) + " |", "|---|---|---|---|" + "---|" * len(KEYS)]
    notes = []
    for name in args.datasets:
        base = open_collection(service, args.data, name)
        copy_dir = base.directory.with_name(base.directory.name + "-distilled")
        shutil.rmtree(copy_dir, ignore_errors=True)
        shutil.copytree(base.directory, copy_dir, ignore=shutil.ignore_patterns("encoders"))
        student_collection = Collection(copy_dir, service.encoder, encoder_loader=SentenceEncoder)
        config = DistillConfig(**{**json.loads(args.config), "full": True})
        report = distill_collection(student_collection, BENCH_HOME / "models", config, show_progress=True)
        shutil.copyfile(copy_dir / "teacher_cache.sqlite", base.directory / "teacher_cache.sqlite")  # reuse next time
        notes.append(f"- {name}: {report.reason}; {report.chunks_total} chunks, {report.pseudo_queries} pseudo-queries, "
                     f"seconds {report.seconds}")
        all_questions = load_questions(dataset_files(args.data, name)[1])
        logged_collection = None
        if args.log_tune:
            logged_dir = base.directory.with_name(base.directory.name + "-logged")
            shutil.rmtree(logged_dir, ignore_errors=True)
            shutil.copytree(base.directory, logged_dir, ignore=shutil.ignore_patterns("encoders"))
            logged_collection = Collection(logged_dir, service.encoder, encoder_loader=SentenceEncoder)
            asked = [q["question"] for q in all_questions if split_of(q["id"]) == "tune"]
            logged_report = distill_collection(logged_collection, BENCH_HOME / "models", config, show_progress=True,
                                               logged_questions=asked)
            notes.append(f"- {name} + logged: {logged_report.reason}; {logged_report.logged_questions} logged tune "
                         f"questions ({logged_report.logged_held_out} held out), seconds {logged_report.seconds}")
        synthetic_collection = None
        if args.synthetic:
            from benchs.common import teacher_cache_path
            from distill.teacher_questions import Budget, QuestionCache, write_questions
            from serve.wiring import teacher_llm

            question_cache = QuestionCache(teacher_cache_path(base.directory))
            budget = Budget(max_seconds=args.teacher_minutes * 60 if args.teacher_minutes is not None else None)
            with teacher_llm(service.settings) as llm:
                synthetic, written = write_questions(base.store.all_chunks(), llm, question_cache, budget,
                                                     show_progress=True)
            question_cache.close()
            synthetic_dir = base.directory.with_name(base.directory.name + "-synthetic")
            shutil.rmtree(synthetic_dir, ignore_errors=True)
            shutil.copytree(base.directory, synthetic_dir, ignore=shutil.ignore_patterns("encoders"))
            synthetic_collection = Collection(synthetic_dir, service.encoder, encoder_loader=SentenceEncoder)
            synthetic_report = distill_collection(synthetic_collection, BENCH_HOME / "models", config,
                                                  show_progress=True, synthetic_questions=synthetic)
            notes.append(f"- {name} + synthetic: {synthetic_report.reason}; teacher on {written.asked + written.cached} "
                         f"of {written.chunks} chunks ({written.teacher_seconds:.0f} s this run), "
                         f"{written.kept} of {written.written} questions kept (dropped {written.dropped}), "
                         f"{synthetic_report.synthetic_questions} trained or held out "
                         f"({synthetic_report.synthetic_held_out} held out); hybrid: "
                         f"{synthetic_report.fusion.get('reason', 'no held-out synthetic questions')}; "
                         f"seconds {synthetic_report.seconds}")
        questions = [q for q in all_questions if q.get("gold_ids")]
        cache = TeacherCache(base.directory / "teacher_cache.sqlite", teacher)
        teacher_ranked = teacher_rankings(base, cache, questions)
        cache.close()
        systems = {
            "BM25": lambda q, i: ranked_docs(base.search(q["question"], 40, "bm25")),
            "MiniLM": lambda q, i: ranked_docs(base.search(q["question"], 40, "dense")),
            "MiniLM + BM25": lambda q, i: ranked_docs(base.search(q["question"], 40, "hybrid")),
            "mpnet teacher": lambda q, i: list(dict.fromkeys(teacher_ranked[i]))[:10],
            "student": lambda q, i: ranked_docs(student_collection.search(q["question"], 40, "dense")),
            "student + BM25": lambda q, i: ranked_docs(student_collection.search(q["question"], 40, "hybrid")),
        }
        if logged_collection is not None:
            systems["student + logged"] = lambda q, i: ranked_docs(logged_collection.search(q["question"], 40, "dense"))
            systems["student + logged + BM25"] = lambda q, i: ranked_docs(
                logged_collection.search(q["question"], 40, "hybrid"))
        if synthetic_collection is not None:
            systems["student + synthetic"] = lambda q, i: ranked_docs(
                synthetic_collection.search(q["question"], 40, "dense"))
            systems["student + synthetic + BM25"] = lambda q, i: ranked_docs(
                synthetic_collection.search(q["question"], 40, "hybrid"))
            # The same student with today's equal fusion weights: what the fitted weight adds, apart.
            equal = dataclasses.replace(synthetic_collection.snapshot(), dense_weight=EQUAL_WEIGHT)
            systems["student + synthetic + BM25, equal weights"] = lambda q, i: ranked_docs(equal.search(
                q["question"], 40, "hybrid", synthetic_collection.store, threading.RLock()))
        for split in ("tune", "report"):
            picked = [(i, q) for i, q in enumerate(questions) if split_of(q["id"]) == split]
            per_question = {}
            for label, rank in systems.items():
                per_question[label] = [ranking_metrics(rank(q, i), set(q["gold_ids"])) for i, q in picked]
                scores = mean(per_question[label])
                lines.append(f"| {name} | {split} | {len(picked)} | {label} | " +
                             " | ".join(f"{scores[k]:.3f}" for k in KEYS) + " |")
                print(lines[-1], flush=True)
            for label in ("student", "student + BM25"):   # is a gap to the teacher more than question sampling?
                diff, low, high = paired_interval(*([m["nDCG@10"] for m in per_question[s]] for s in (label, "mpnet teacher")))
                notes.append(f"- {name}, {split}: {label} - teacher nDCG@10 {diff:+.3f}, 95% paired bootstrap "
                             f"interval [{low:+.3f}, {high:+.3f}]")
            if synthetic_collection is not None:   # the synthetic questions never saw the set's real questions
                for label in ("student + synthetic + BM25", "student + synthetic + BM25, equal weights"):
                    diff, low, high = paired_interval(*([m["nDCG@10"] for m in per_question[s]]
                                                        for s in (label, "student + BM25")))
                    notes.append(f"- {name}, {split}: {label} - student + BM25 nDCG@10 {diff:+.3f}, "
                                 f"95% paired bootstrap interval [{low:+.3f}, {high:+.3f}]")
            if logged_collection is not None and split == "report":   # the logged questions were the tune half
                diff, low, high = paired_interval(*([m["nDCG@10"] for m in per_question[s]]
                                                    for s in ("student + logged", "student")))
                notes.append(f"- {name}, report: student + logged - student nDCG@10 {diff:+.3f}, 95% paired "
                             f"bootstrap interval [{low:+.3f}, {high:+.3f}]")
        student_dir = student_collection.encoder_dir
        student_collection.close()
        if logged_collection is not None:
            logged_collection.close()
        if synthetic_collection is not None:
            synthetic_collection.close()
    texts = [c.embedding_text() for c in base.store.all_chunks()[:256]]
    student = SentenceEncoder(student_dir) if student_dir else service.encoder
    t_rate, s_rate = throughput(teacher, texts), throughput(student, texts)
    short = [q["question"][:200] for q in questions[:256]]
    tq_rate, sq_rate = throughput(teacher, short), throughput(student, short)
    lines += ["", "| encoding (2 CPU cores, batch 32, same texts) | teacher texts/s | student texts/s | ratio |",
              "|---|---|---|---|",
              f"| 256 passages of {name} | {t_rate:.1f} | {s_rate:.1f} | {s_rate / t_rate:.1f}x |",
              f"| 256 questions of {name} | {tq_rate:.1f} | {sq_rate:.1f} | {sq_rate / tq_rate:.1f}x |",
              "", f"Distillation runs (config overrides {args.config}):", *notes]
    publish(lines, args.out)
    print("\n".join(lines[-(len(notes) + 7):]))


if __name__ == "__main__":
    main()
