"""The hand-off's "low confidence" threshold (issue 17, 1): answerability below it recommends a person.

    python -m benchs.quality.handoff_confidence --data PATH/TO/shared/data [--split tune]

On the cached retrieval rows of the answer benchmarks (benchs/common.py), the default answerer (select mode,
gap detector) answers every answerable question on the full knowledge base and every gap question on the gap
knowledge base. Among the answers given (not abstained), per threshold: the share flagged, the mean token-F1 of
flagged and unflagged answerable answers, and the share of the answers to gap questions flagged (those answers
cannot be right: their documents are gone). Pick on tune (flag most gap answers while flagging few answerable
ones), report on report.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import ANSWER_DATASETS, BENCH_HOME, hits_of, publish, retrieval_rows
from distill.metrics import token_f1
from serve.service import KbqaService
from serve.settings import Settings

THRESHOLDS = (0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="tune", choices=("tune", "report"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    service = KbqaService.load(Settings(home=BENCH_HOME))
    answerable, gap = [], []   # (answerability, token-F1) of answers given; answerability of gap answers given
    for name in ANSWER_DATASETS:
        for row in retrieval_rows(service, args.data, name, args.split):
            if row["answerable"]:
                answer = service.pipeline.run(row["question"], lambda _: hits_of(row["hits"]))
                if not answer.abstained:
                    answerable.append((answer.answerability, token_f1(answer.answer, row["reference"])))
            if row["gap_status"] == "gap":
                answer = service.pipeline.run(row["question"], lambda _: hits_of(row["gap_hits"]))
                if not answer.abstained:
                    gap.append(answer.answerability)
    scores, f1 = np.array([a for a, _ in answerable]), np.array([f for _, f in answerable])
    gap_scores = np.array(gap)
    lines = [f"Hand-off low-confidence threshold, {args.split} split: {len(answerable)} answers to answerable "
             f"questions (full KB), {len(gap)} answers to gap questions (their documents removed), all sets.", "",
             "| threshold | answerable answers flagged | token-F1 flagged | token-F1 not flagged | gap answers flagged |",
             "|---|---|---|---|---|"]
    for t in THRESHOLDS:
        low = scores < t
        lines.append(f"| {t} | {low.mean():.3f} | {f1[low].mean() if low.any() else float('nan'):.3f} | "
                     f"{f1[~low].mean() if (~low).any() else float('nan'):.3f} | {(gap_scores < t).mean():.3f} |")
    publish(lines, args.out or Path(f"benchs/results/handoff_confidence_{args.split}.md"))


if __name__ == "__main__":
    main()
