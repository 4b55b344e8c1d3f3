"""Retrieval quality of dense, BM25 and hybrid search on the dev sets, per split.

    python -m benchs.quality.retrieval_quality --data PATH/TO/shared/data [--out benchs/results/retrieval_quality.md]

Each dataset's kb.jsonl is ingested the product's way (loader, chunker, serving encoder); a
document ranks where its best chunk ranks. Questions are split by id hash: the default mode
is chosen on "tune" and reported on "report".
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import (BENCH_HOME, RETRIEVAL_DATASETS, dataset_files, load_questions, mean, open_collection,
                           publish, ranked_docs, split_of)
from distill.metrics import ranking_metrics
from serve.service import KbqaService
from serve.settings import Settings

MODES = ("bm25", "dense", "hybrid")
SMOKE_ONLY = {"plausible_docs"}  # its questions are headings copied from the docs: not used to choose


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder holding the normalised datasets")
    parser.add_argument("--datasets", nargs="*", default=list(RETRIEVAL_DATASETS))
    parser.add_argument("--out", type=Path, default=Path("benchs/results/retrieval_quality.md"))
    args = parser.parse_args()

    service = KbqaService.load(Settings(home=BENCH_HOME), with_generator=False)
    lines = ["| dataset | split | n | mode | hit@1 | hit@5 | nDCG@10 | MRR@10 |", "|---|---|---|---|---|---|---|---|"]
    summary: dict[tuple[str, str], list[float]] = {}
    for name in args.datasets:
        collection = open_collection(service, args.data, name)
        questions = [q for q in load_questions(dataset_files(args.data, name)[1]) if q.get("gold_ids")]
        for split in ("tune", "report"):
            subset = [q for q in questions if split_of(q["id"]) == split]
            for mode in MODES:
                scores = mean([ranking_metrics(ranked_docs(collection.search(q["question"], 40, mode)), set(q["gold_ids"]))
                               for q in subset])
                if name not in SMOKE_ONLY:
                    summary.setdefault((split, mode), []).append(scores["nDCG@10"])
                lines.append(f"| {name} | {split} | {len(subset)} | {mode} | " +
                             " | ".join(f"{scores[k]:.3f}" for k in ("hit@1", "hit@5", "nDCG@10", "MRR@10")) + " |")
                print(lines[-1], flush=True)
    lines += ["", "| split | mode | mean nDCG@10 over the dev sets (smoke test excluded) |", "|---|---|---|"]
    for (split, mode), values in sorted(summary.items()):
        lines.append(f"| {split} | {mode} | {sum(values) / len(values):.3f} |")
    best = max(MODES, key=lambda m: sum(summary[("tune", m)]))
    lines.append(f"\nBest mode on the tune split: **{best}** (encoder {service.encoder.encoder_id}).")
    publish(lines, args.out)
    print("\n".join(lines[-8:]))


if __name__ == "__main__":
    main()
