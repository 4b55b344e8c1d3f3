"""How the selector and the gap detector carry to a dev set they were not fitted on, on the tune split, without a
model: the examples distill/selector_loo.py featurised with dataset-crossed scorers (OUT/.by-dataset/*.pkl).

    python -m benchs.quality.loo_fit_study [--features .kbqa-bench/loo/.by-dataset]

For each set S, the selector and gap detector are fitted as selector_loo fits them (the other two sets, each
featurised by the scorer of the remaining one) and measured on S's tune examples as featurised by each other set's
scorer (neither saw S; the mean of the two is shown). Fitting recipes compared: the harness's (selector_train.py), a
stronger L2 penalty on the selector, stricter false-abstention limits for the gap detector, and gap detectors over
fewer signals. token-F1 here is the selection's on answerable examples (no abstention counted); gap recall and false
abstention are on S's gap-protocol examples and its answerable ones. A detector refusing at random with rate r has
recall r at false abstention r: the distance from that diagonal is its skill.
"""
from __future__ import annotations

import argparse
import functools
import pickle
from pathlib import Path

import numpy as np

from benchs.common import BENCH_HOME, RESULTS, publish
from distill.metrics import token_f1
from distill.selector_train import fit_gap_detector, fit_selector, passages_of, selection_of
from retrieval.answering.gap_detector import SIGNALS, gap_signals


def load(folder: Path) -> dict[str, list[dict]]:
    return {p.stem: pickle.loads(p.read_bytes()) for p in sorted(folder.glob("*-by-*.pkl"))}


def measure(selector, detector, items: list[dict]) -> tuple[float, float, float]:
    answerable = [p for p in items if p["example"]["kind"] == "answerable"]
    f1 = float(np.mean([token_f1(selection_of(selector, p).text()[0], p["example"]["reference"]) for p in answerable]))
    gap = np.array([p["example"]["kind"] == "gap" for p in items])
    refused = np.array([detector.refuses(gap_signals(p["example"]["question"], passages_of(p["example"]),
                                                     selection_of(selector, p))) for p in items])
    return f1, float(refused[gap].mean()), float(refused[~gap].mean())


RECIPES = {
    "harness (selector_train.py)": (fit_selector, fit_gap_detector),
    "selector L2 C=0.1": (functools.partial(fit_selector, c=0.1), fit_gap_detector),
    "selector L2 C=0.01": (functools.partial(fit_selector, c=0.01), fit_gap_detector),
    "gap: false abstention <= 4% on training sets": (fit_selector,
                                                     functools.partial(fit_gap_detector, max_false_abstention=0.04)),
    "gap: false abstention <= 2% on training sets": (fit_selector,
                                                     functools.partial(fit_gap_detector, max_false_abstention=0.02)),
    "gap: no retrieval cosines": (fit_selector, functools.partial(fit_gap_detector, using=tuple(
        s for s in SIGNALS if s not in ("top_dense", "dense_margin")))),
    "gap: best score and coverage only": (fit_selector, functools.partial(fit_gap_detector, using=(
        "bias", "best_score_logit", "question_coverage"))),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features", type=Path, default=BENCH_HOME / "loo" / ".by-dataset")
    parser.add_argument("--out", type=Path, default=RESULTS / "loo_fit_study.md")
    args = parser.parse_args()
    features = load(args.features)
    sets = sorted({name.split("-by-")[0] for name in features})
    lines = ["Leave-one-dataset-out on the tune split (features from scorers that never saw the measured set); "
             "per set token-F1 / gap recall / gap false abstention, then the mean over sets.", "",
             "| recipe | " + " | ".join(sets) + " | mean token-F1 | mean gap recall | mean false abstention |",
             "|---" * (len(sets) + 4) + "|"]
    for label, (fit_sel, fit_gap) in RECIPES.items():
        cells, means = [], []
        for held in sets:
            others = [d for d in sets if d != held]
            train = [p for d in others for p in features[f"{d}-by-{[o for o in others if o != d][0]}"]]
            selector = fit_sel(train)
            detector = fit_gap(train, selector)
            figures = np.mean([measure(selector, detector, features[f"{held}-by-{o}"]) for o in others], axis=0)
            cells.append(" / ".join(f"{v:.3f}" for v in figures))
            means.append(figures)
        mean = np.mean(means, axis=0)
        lines.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(f"{v:.3f}" for v in mean) + " |")
        print(lines[-1], flush=True)
    publish(lines, args.out)


if __name__ == "__main__":
    main()
