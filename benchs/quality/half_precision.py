"""Does half precision change what kbqa answers or retrieves? Issue 16: half precision on a GPU "where quality holds
(paired interval)". Both checks run here on the CPU with the real shipped models (a GPU machine lent to kbqa cannot
take weights over 64 MiB, so its runs use random weights and measure speed only; benchs/speed/gpu_check.py).

    python -m benchs.quality.half_precision --data PATH/TO/shared/data [--per-dataset 60] [--gap-per-dataset 40]

1. The generator (transformers engine, shipped adapter merged, served in generate mode with every default) in
   float32 and in bfloat16, on answer_trust's report-split sample: token-F1 of the served answer (per question,
   paired; 95% bootstrap interval of the difference), how often the two wrote the same text, false abstentions,
   and gap recall on the knowledge-gap protocol.
2. The encoder (the shipped MiniLM student) in float32 and float16: each dev set's chunks and report questions
   encoded both ways, exact dense search, nDCG@10 per question, paired.

The CPU computes bfloat16/float16 with float32 accumulation, as a GPU's tensor cores do, but its kernels are not the
GPU's: the figures say what the precision does to these models, not bit for bit what a GPU writes.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import (ANSWER_DATASETS, BENCH_HOME, dataset_files, load_questions, open_collection, publish,
                           retrieval_rows, sample, Served, split_of)
from distill.metrics import paired_interval, ranking_metrics, token_f1
from retrieval.encoder import SentenceEncoder
from retrieval.answering.engines.cpu import describe
from retrieval.models import STUDENT_START, model_path
from serve.service import KbqaService
from serve.settings import Settings


def paired(diffs: list[float]) -> str:
    mean, low, high = paired_interval(diffs, [0.0] * len(diffs), rounds=5000)
    return f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]"


def generator_check(data: Path, per_dataset: int, gap_per_dataset: int) -> list[str]:
    arms = {}
    for dtype in ("float32", "bfloat16"):
        service = KbqaService.load(Settings(home=BENCH_HOME, answer_mode="generate", generator_backend="transformers",
                                            generator_dtype=dtype))
        arms[dtype] = Served(service.pipeline, BENCH_HOME / "answers" / f"half-precision-{dtype}-report.jsonl")
    f1 = {a: [] for a in arms}
    same, abstained, gap_refused = [], {a: [] for a in arms}, {a: [] for a in arms}
    for name in ANSWER_DATASETS:
        rows = retrieval_rows(None, data, name, "report")
        for row in sample(rows, lambda r: r["answerable"], per_dataset):
            results = {a: served(row["id"], row["question"], row["hits"]) for a, served in arms.items()}
            for a, r in results.items():
                f1[a].append(0.0 if r["abstained"] else token_f1(r["answer"], row["reference"]))
                abstained[a].append(float(r["abstained"]))
            same.append(float(results["float32"]["answer"] == results["bfloat16"]["answer"]))
        for row in sample(rows, lambda r: r["gap_status"] == "gap", gap_per_dataset):
            for a, served in arms.items():
                gap_refused[a].append(float(served(row["id"] + ":gap", row["question"], row["gap_hits"])["abstained"]))
        print(f"{name}: generator done", flush=True)
    diff = [b - a for a, b in zip(f1["float32"], f1["bfloat16"])]
    gap_diff = [b - a for a, b in zip(gap_refused["float32"], gap_refused["bfloat16"])]
    return [
        "## Generator: float32 vs bfloat16 (generate mode, as served)", "",
        f"{len(diff)} answerable report questions ({per_dataset} a set), {len(gap_diff)} gap questions "
        f"({gap_per_dataset} a set).", "",
        "| | float32 | bfloat16 | bfloat16 - float32, 95% paired interval |", "|---|---|---|---|",
        f"| token-F1 | {np.mean(f1['float32']):.4f} | {np.mean(f1['bfloat16']):.4f} | {paired(diff)} |",
        f"| false abstention (full KB) | {np.mean(abstained['float32']):.3f} | {np.mean(abstained['bfloat16']):.3f} | "
        f"{paired([b - a for a, b in zip(abstained['float32'], abstained['bfloat16'])])} |",
        f"| gap recall | {np.mean(gap_refused['float32']):.3f} | {np.mean(gap_refused['bfloat16']):.3f} | "
        f"{paired(gap_diff)} |",
        f"| same answer text | | {np.mean(same):.3f} | |", ""]


def encoder_check(data: Path) -> list[str]:
    folder = model_path(BENCH_HOME / "models", STUDENT_START)
    encoders = {dtype: SentenceEncoder(folder, device="cpu", dtype=dtype) for dtype in ("float32", "float16")}
    service = KbqaService.load(Settings(home=BENCH_HOME), with_generator=False)
    lines = ["## Encoder: float32 vs float16 (exact dense search over each dev set's chunks)", "",
             "| dataset | report questions | chunks | nDCG@10 float32 | nDCG@10 float16 | float16 - float32, 95% paired "
             "interval | min cosine (chunks) |", "|---|---|---|---|---|---|---|"]
    all_diffs = []
    for name in ANSWER_DATASETS:
        chunks = open_collection(service, data, name).store.all_chunks()
        questions = [q for q in load_questions(dataset_files(data, name)[1])
                     if q.get("gold_ids") and split_of(q["id"]) == "report"]
        ndcg, vectors = {}, {}
        for dtype, encoder in encoders.items():
            vectors[dtype] = encoder.encode([c.embedding_text() for c in chunks])
            queries = encoder.encode([q["question"] for q in questions])
            top = np.argsort(-(queries @ vectors[dtype].T), axis=1)[:, :40]
            ndcg[dtype] = []
            for q, rows in zip(questions, top):
                ranked = list(dict.fromkeys(chunks[i].doc_id for i in rows))[:10]
                ndcg[dtype].append(ranking_metrics(ranked, set(q["gold_ids"]))["nDCG@10"])
        diffs = [b - a for a, b in zip(ndcg["float32"], ndcg["float16"])]
        all_diffs += diffs
        cosine = float((vectors["float32"] * vectors["float16"]).sum(axis=1).min())
        lines.append(f"| {name} | {len(questions)} | {len(chunks)} | {np.mean(ndcg['float32']):.4f} | "
                     f"{np.mean(ndcg['float16']):.4f} | {paired(diffs)} | {cosine:.6f} |")
        print(lines[-1], flush=True)
    lines += [f"| all | {len(all_diffs)} | | | | {paired(all_diffs)} | |", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--per-dataset", type=int, default=60, help="answerable report questions per set")
    parser.add_argument("--gap-per-dataset", type=int, default=40, help="gap-protocol questions per set")
    parser.add_argument("--only", choices=("generator", "encoder"), help="run one check only")
    parser.add_argument("--out", type=Path, default=Path("benchs/results/half_precision.md"))
    args = parser.parse_args()
    lines = ["# Half precision: what it changes (benchs/quality/half_precision.py)", "", f"CPU: {describe()}", ""]
    if args.only != "generator":
        lines += encoder_check(args.data)
    if args.only != "encoder":
        lines += generator_check(args.data, args.per_dataset, args.gap_per_dataset)
    publish(lines, args.out)


if __name__ == "__main__":
    main()
