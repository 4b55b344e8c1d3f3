"""Calibrate the relevance gate (Settings.min_relevance) on the tune split, report on the other.

    python -m benchs.quality.calibrate_abstention --data PATH/TO/shared/data

For each dataset's collection: questions of that dataset should be answered (gold retrievable);
questions of the *other* datasets are off-topic there and should be abstained on. The gate
abstains when the best cosine among the top-5 hybrid hits is below the threshold. TechQA's
unanswerable questions are on-topic: the gate is not expected to catch them (the generator must).

With ``--encoder multilingual`` the collections are served by the multilingual encoder (``<dataset>-multilingual``,
as ``kbqa ingest --encoder multilingual`` makes them): its cosines live on another scale (Settings.
multilingual_min_relevance).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import (BENCH_HOME, RETRIEVAL_DATASETS, dataset_files, load_questions, multilingual_collection,
                           open_collection, publish, split_of, top_cosine)
from serve.service import KbqaService
from serve.settings import Settings

MAX_FALSE_ABSTAIN = 0.05  # at most 5% of answerable tune questions may be refused by the gate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--per-source", type=int, default=60, help="off-topic questions taken from each other dataset")
    parser.add_argument("--encoder", choices=("default", "multilingual"), default="default")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.out = args.out or Path("benchs/results/calibrate_abstention" +
                                ("_multilingual.md" if args.encoder == "multilingual" else ".md"))
    service = KbqaService.load(Settings(home=BENCH_HOME), with_generator=False)
    questions = {name: load_questions(dataset_files(args.data, name)[1]) for name in RETRIEVAL_DATASETS}
    scores = {(split, kind): [] for split in ("tune", "report") for kind in ("answerable", "off-topic", "unanswerable")}
    for name in RETRIEVAL_DATASETS:
        collection = open_collection(service, args.data, name) if args.encoder == "default" else \
            multilingual_collection(service, args.data, name)
        for q in questions[name]:
            kind = "answerable" if q.get("answerable", True) and q.get("gold_ids") else "unanswerable"
            scores[(split_of(q["id"]), kind)].append(top_cosine(collection, q["question"]))
        for other in RETRIEVAL_DATASETS:
            if other != name:
                for q in questions[other][: args.per_source]:
                    scores[(split_of(q["id"]), "off-topic")].append(top_cosine(collection, q["question"]))

    def rates(split: str, threshold: float) -> dict[str, float]:
        return {kind: float(np.mean(np.array(scores[(split, kind)]) < threshold)) for kind in
                ("answerable", "off-topic", "unanswerable")}

    candidates = [t for t in np.arange(0.0, 1.0, 0.01) if rates("tune", t)["answerable"] <= MAX_FALSE_ABSTAIN]
    best = max(candidates, key=lambda t: (1 - rates("tune", t)["answerable"]) + rates("tune", t)["off-topic"])
    lines = [f"Chosen threshold (tune split, false abstention <= {MAX_FALSE_ABSTAIN:.0%}): **{best:.2f}**", "",
             "| split | threshold | abstains on answerable | abstains on off-topic | abstains on TechQA unanswerable | n answerable / off-topic / unanswerable |",
             "|---|---|---|---|---|---|"]
    for split in ("tune", "report"):
        for t in sorted({0.2, 0.25, 0.3, 0.35, 0.4} | {round(best + d, 2) for d in (-0.04, -0.02, 0.0, 0.02, 0.04)}):
            r = rates(split, t)
            n = "/".join(str(len(scores[(split, k)])) for k in ("answerable", "off-topic", "unanswerable"))
            lines.append(f"| {split} | {t:.2f} | {r['answerable']:.3f} | {r['off-topic']:.3f} | {r['unanswerable']:.3f} | {n} |")
    publish(lines, args.out)


if __name__ == "__main__":
    main()
