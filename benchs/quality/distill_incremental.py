"""Re-distillation after the docs change: incremental (current student + new chunks + replay) vs full.

    python -m benchs.quality.distill_incremental --data PATH/TO/shared/data [--dataset emanualqa] [--held-back 0.15]

1. Ingest the dataset's kb.jsonl without a held-back share of its documents; full distillation.
2. Ingest the complete kb.jsonl (the docs "changed"); `kbqa status` figure; incremental distillation.
3. For comparison, a full distillation from MiniLM on the complete kb, in a copy.
Prints wall time and real-question quality (report split) of both, checked on the same collection.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import (BENCH_HOME, dataset_files, load_questions, mean, publish,
                           ranked_docs, split_of)
from distill.metrics import ranking_metrics
from distill.config import DistillConfig
from distill.run import distill_collection, freshness
from retrieval.collection import Collection
from serve.service import KbqaService
from serve.settings import Settings


def quality(collection: Collection, questions: list[dict]) -> dict[str, float]:
    return mean([ranking_metrics(ranked_docs(collection.search(q["question"], 40, "dense")), set(q["gold_ids"])) for q in questions])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--dataset", default="emanualqa")
    parser.add_argument("--held-back", type=float, default=0.15)
    parser.add_argument("--out", type=Path, default=Path("benchs/results/distill_incremental.md"))
    args = parser.parse_args()
    service = KbqaService.load(Settings(home=BENCH_HOME), with_generator=False)
    kb, questions_file = dataset_files(args.data, args.dataset)
    records = [json.loads(line) for line in kb.read_text().splitlines() if line.strip()]
    held = set(random.Random(0).sample(range(len(records)), int(len(records) * args.held_back)))
    questions = [q for q in load_questions(questions_file) if q.get("gold_ids") and split_of(q["id"]) == "report"]

    work = BENCH_HOME / "incremental" / args.dataset
    shutil.rmtree(work, ignore_errors=True)
    source = work / "source"
    source.mkdir(parents=True)
    name = f"{args.dataset.replace('_', '-')}-incremental"
    for stale in (name, name + "-full"):  # an earlier run's promoted student would be the baseline otherwise
        shutil.rmtree(BENCH_HOME / "collections" / stale, ignore_errors=True)
    cached = BENCH_HOME / "collections" / args.dataset.replace("_", "-") / "teacher_cache.sqlite"
    collection = service.collection(name, create=True)
    if cached.exists():  # the teacher's vectors of these texts, if distill_quality.py ran: both arms share them
        shutil.copyfile(cached, collection.directory / "teacher_cache.sqlite")

    (source / "kb.jsonl").write_text("\n".join(json.dumps(r) for i, r in enumerate(records) if i not in held))
    service.ingest(source, name)
    first = distill_collection(collection, BENCH_HOME / "models", DistillConfig(full=True))
    (source / "kb.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    service.ingest(source, name)
    status = freshness(collection)

    # The full arm: the complete docs in a collection still served by MiniLM, distilled from scratch.
    full_name = name + "-full"
    full_collection = service.collection(full_name, create=True)
    service.ingest(source, full_name)
    start = time.perf_counter()
    incremental = distill_collection(collection, BENCH_HOME / "models", DistillConfig())
    incremental_s = time.perf_counter() - start
    # Both arms use the teacher vectors cached by now: the comparison is of training work, not caching.
    shutil.copyfile(collection.directory / "teacher_cache.sqlite", full_collection.directory / "teacher_cache.sqlite")
    start = time.perf_counter()
    full = distill_collection(full_collection, BENCH_HOME / "models", DistillConfig(full=True))
    full_s = time.perf_counter() - start

    rows = [("incremental (from the current student)", incremental, incremental_s, quality(collection, questions)),
            ("full (from MiniLM)", full, full_s, quality(full_collection, questions))]
    lines = [f"{args.dataset}: first distillation on {len(records) - len(held)} of {len(records)} documents "
             f"({'promoted' if first.promoted else 'not promoted'}); then {len(held)} documents added: "
             f"`kbqa status` said {status['chunks_newer_than_encoder']} of {status['chunks']} chunks "
             f"({status['share_newer']:.0%}) newer than the serving encoder.", "",
             "| re-distillation | chunks trained on | triples | seconds | promoted | held-out MRR@10 (serving -> student) | "
             f"nDCG@10 on {len(questions)} real questions (report split) | hit@5 |", "|---|---|---|---|---|---|---|---|"]
    for label, report, seconds, q in rows:
        lines.append(f"| {label} | {report.chunks_trained_on} | {report.triples} | {seconds:.0f} | {report.promoted} | "
                     f"{report.serving.get('mrr@10', 0):.3f} -> {report.student.get('mrr@10', 0):.3f} | "
                     f"{q['nDCG@10']:.3f} | {q['hit@5']:.3f} |")
    lines.append(f"\nTime saved by the incremental run: {1 - incremental_s / full_s:.0%} ({incremental_s:.0f} s vs {full_s:.0f} s).")
    publish(lines, args.out)


if __name__ == "__main__":
    main()
