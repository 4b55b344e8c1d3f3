"""Does a sentence scorer adapted on a collection's synthetic questions (distill/reader_adapt.py) answer and spot
gaps better on that collection's real questions? Leave-one-dataset-out, no label of the measured set used.

    python -m benchs.quality.reader_adapt --data PATH/TO/shared/data --loo .kbqa-bench/loo [--split tune|report]

For each dev set S: the scorer, selector and gap detector fitted without S (distill/selector_loo.py), and S's
synthetic questions (the teacher's cache in the bench collection, `kbqa teacher-questions`). The adapted scorer
continues S's leave-one-out scorer on the pairs of the synthetic questions that distillation trains on (the held-out
tenth calibrates thresholds only); it is kept under ``.kbqa-bench/adapted/S/`` and reused. Both scorers, with the
same leave-one-out selector and gap detector, are measured on S's real questions: the selection's token-F1 and
citation precision on answerable questions (full knowledge base, no abstention), and under the gap protocol the gap
detector's ranking (AUC, gap vs still answerable) and its recall / false abstention at its own threshold and at a
threshold calibrated on the held-out synthetic questions (<= 5% of them refused).
"""
from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import (ANSWER_DATASETS, BENCH_HOME, HITS, RESULTS, hits_of, loo_parts, open_collection, publish,
                           real_signals, retrieval_rows, sample, synthetic_questions)
from distill.gap_calibration import calibrated, synthetic_signals
from distill.metrics import token_f1
from distill.reader_adapt import AdaptConfig, adapt_scorer, synthetic_pairs
from distill.selector_loo import latest_version, load_scorer
from distill.teacher_questions import split_held_out
from retrieval.answering.engines.cpu import describe
from retrieval.answering.gates import RelevanceGate
from retrieval.answering.selection import SentenceSelection
from serve.service import KbqaService
from serve.settings import Settings

MAX_TRAIN_QUESTIONS = 400   # about 9,000 pairs: 8 min of training on 2 cores


def auc(gap: list[float], still: list[float]) -> float:
    """P(a gap question scores above a still-answerable one), ties half."""
    if not gap or not still:
        return float("nan")
    g, s = np.asarray(gap)[:, None], np.asarray(still)[None, :]
    return float(((g > s) + 0.5 * (g == s)).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--loo", type=Path, required=True)
    parser.add_argument("--split", default="tune", choices=("tune", "report"))
    parser.add_argument("--datasets", nargs="+", default=list(ANSWER_DATASETS), choices=ANSWER_DATASETS)
    parser.add_argument("--per-dataset", type=int, default=60)
    parser.add_argument("--gap-per-dataset", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=AdaptConfig.epochs)
    parser.add_argument("--lr", type=float, default=AdaptConfig.lr)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    config = AdaptConfig(epochs=args.epochs, lr=args.lr)
    settings = Settings(home=BENCH_HOME)
    service = KbqaService.load(settings)
    relevance = RelevanceGate(settings.min_relevance, settings.prompt_passages)
    models = settings.kbqa_home.models_dir
    lines = [f"Sentence scorer adapted on synthetic questions, leave-one-dataset-out, {args.split} split; "
             f"{config.epochs} epoch(s) at lr {config.lr:g}. CPU: {describe()}.", "",
             "| set | scorer | synthetic questions (trained / held out) | token-F1 | citation precision | gap AUC | "
             "gap recall / false abstention (LOO threshold) | full-KB false abstention (LOO threshold) | "
             "gap recall / false abstention (synthetic threshold) |", "|---" * 8 + "|"]
    for name in args.datasets:
        parts = loo_parts(settings, args.loo / name)
        collection = open_collection(service, args.data, name)
        chunks = collection.store.all_chunks()
        questions = synthetic_questions(collection)
        trained, held = split_held_out(questions)
        adapted_dir = BENCH_HOME / "adapted" / f"{name}-e{config.epochs}-lr{config.lr:g}"
        adapted = latest_version(adapted_dir / "sentence-scorer")
        if adapted is None:
            chosen = random.Random(0).sample(trained, min(len(trained), MAX_TRAIN_QUESTIONS))
            pairs = synthetic_pairs(chosen, {c.chunk_id: c for c in chunks}, lambda q: collection.search(q, HITS))
            print(f"{name}: adapting on {len(pairs)} pairs of {len(chosen)} synthetic questions", flush=True)
            base = latest_version(args.loo / name / "sentence-scorer")
            adapted = adapt_scorer(base, pairs, adapted_dir, config, show_progress=True)
        report = json.loads((adapted / "training.json").read_text()) if (adapted / "training.json").exists() else {}
        rows = retrieval_rows(service, args.data, name, args.split)
        answerable = sample(rows, lambda r: r["answerable"], args.per_dataset)
        gaps = sample(rows, lambda r: r["gap_status"] == "gap", args.gap_per_dataset)
        still = sample(rows, lambda r: r["gap_status"] == "answerable", args.gap_per_dataset)
        doc_of = {c.chunk_id: c.doc_id for c in chunks}
        for label, scorer in (("leave-one-out", parts["sentence_scorer"]),
                              ("adapted on synthetic", load_scorer(adapted, models))):
            selection = SentenceSelection(parts["selector"], scorer)
            f1, cited = [], []
            for row in answerable:
                used = relevance.run(hits_of(row["hits"]))
                if not used:
                    f1.append(0.0)
                    continue
                chosen = selection.run(row["question"], used)
                text, numbers = chosen.text()
                f1.append(token_f1(text, row["reference"]))
                cited += [float(used[n - 1].chunk.doc_id in set(row["gold_ids"])) for n in numbers]
            detector = parts["gap_detector"]
            signals = {k: real_signals(v, key, relevance, selection) for k, v, key in
                       (("gap", gaps, "gap_hits"), ("still", still, "gap_hits"), ("full", answerable, "hits"))}
            prob = {k: [1.0 if s is None else detector.probability(s) for s in v] for k, v in signals.items()}
            synthetic = synthetic_signals(held, doc_of, lambda q: collection.search(q, 4 * HITS), relevance,
                                          selection, HITS)
            try:
                own = calibrated(detector, synthetic, "threshold", 0.05)
                at_own = (f"{np.mean([p >= own.threshold for p in prob['gap']]):.3f} / "
                          f"{np.mean([p >= own.threshold for p in prob['still']]):.3f}")
            except ValueError as exc:
                at_own = f"- ({exc})"[:60]
            lines.append(
                f"| {name} | {label} | {len(trained)} / {len(held)} | {np.mean(f1):.3f} | "
                f"{np.mean(cited) if cited else float('nan'):.3f} | {auc(prob['gap'], prob['still']):.3f} | "
                f"{np.mean([p >= detector.threshold for p in prob['gap']]):.3f} / "
                f"{np.mean([p >= detector.threshold for p in prob['still']]):.3f} | "
                f"{np.mean([p >= detector.threshold for p in prob['full']]):.3f} | {at_own} |")
            print(lines[-1], flush=True)
        if report:
            lines.append(f"| {name} | (adapted scorer: {report.get('pairs')} pairs, validation AUC "
                         f"{report.get('valid_auc')}, {report.get('seconds')} s) | | | | | | | |")
    publish(lines, args.out or RESULTS / f"reader_adapt_{args.split}.md")


if __name__ == "__main__":
    main()
