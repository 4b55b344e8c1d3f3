"""Issue 17's last measurement: does `kbqa train-generator --from-feedback` help? A simulated feedback log, built from
the tune split, trains an adapter; benchs/quality/answer_trust.py then compares it with the shipped adapter on the report split.

    python -m benchs.quality.feedback_loop --data PATH/TO/shared/data            # log, rate, train (about 45-70 min on 2 cores)
    python -m benchs.quality.answer_trust --data PATH/TO/shared/data --adapter .kbqa-bench/feedback-loop/models/generator-adapters/v0001
    python -m benchs.quality.feedback_loop --data PATH/TO/shared/data --paired   # token-F1 difference with a 95% interval

The log: every answerable tune-split question of each dev set is asked of its collection through KbqaService.ask,
as served by default (answers land in a feedback store of their own). The "customer" rates an answer by comparing it
with the reference answer: helpful when token-F1 >= --helpful, unhelpful when it abstained or token-F1 < --unhelpful,
no rating between (most customers rate nothing). An "admin" corrects every unhelpful answer with the reference
answer (PATCH /v1/feedback/{id} does the same). The adapter is trained exactly as `kbqa train-generator
--from-feedback` trains one: the shipped examples, the FAQ pairs mined from kb/ (as the shipped adapter had), and
distill.generator_data.feedback_examples over each collection's training_answers.

Caveat written into the result: the shipped examples were built from the same tune questions (different targets),
so the feedback examples repeat questions the shipped adapter already saw.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import (ANSWER_DATASETS, BENCH_HOME, REPO, RESULTS, open_collection, publish,
                           retrieval_rows)
from distill.generator_data import feedback_examples, mined_faq_examples, read_examples
from distill.generator_train import SHIPPED_EXAMPLES, GeneratorTrainConfig, train_generator
from distill.metrics import paired_interval, token_f1
from retrieval.answering.engines.cpu import describe
from retrieval.models import GENERATOR_BASE, model_path
from serve.feedback import FeedbackStore
from serve.service import KbqaService
from serve.settings import Settings

WORK = BENCH_HOME / "feedback-loop"
KB = REPO / "kb"


def simulate_log(service: KbqaService, data: Path, helpful: float, unhelpful: float) -> Counter:
    """Ask, rate and correct every answerable tune question of each set; counts of what happened."""
    counts = Counter()
    for name in ANSWER_DATASETS:
        collection = open_collection(service, data, name).name
        for row in retrieval_rows(service, data, name, "tune"):
            if not row["answerable"]:
                continue
            answer = service.ask(row["question"], collection=collection)
            f1 = 0.0 if answer.abstained else token_f1(answer.answer, row["reference"])
            if f1 >= helpful:
                service.feedback.add_feedback(answer.answer_id, True)
                counts[f"{name}: rated helpful"] += 1
            elif answer.abstained or f1 < unhelpful:
                feedback_id = service.feedback.add_feedback(answer.answer_id, False)
                service.feedback.correct(feedback_id, row["reference"])
                counts[f"{name}: rated unhelpful, corrected"] += 1
            else:
                counts[f"{name}: not rated"] += 1
        print(f"{name}: logged", flush=True)
    return counts


def paired(data: Path, per_dataset: int = 60) -> None:
    """Token-F1 of the feedback adapter minus the shipped one on answer_trust's answerable report sample, paired per
    question, with a 95% bootstrap interval (both systems' answers from answer_trust's caches)."""
    import glob
    import random

    def cached(pattern: str) -> dict:
        [path] = glob.glob(str(BENCH_HOME / "answers" / pattern))
        return {r["key"]: r for r in map(json.loads, Path(path).read_text().splitlines())}

    shipped, feedback = cached("old-default-*-report.jsonl"), cached("adapter-*-report.jsonl")
    diffs = []
    for name in ANSWER_DATASETS:
        rows = [r for r in retrieval_rows(None, data, name, "report") if r["answerable"]]
        for row in random.Random(0).sample(rows, min(per_dataset, len(rows))):   # answer_trust's sample
            f1 = [0.0 if a[row["id"]]["abstained"] else token_f1(a[row["id"]]["answer"], row["reference"])
                  for a in (feedback, shipped)]
            diffs.append(f1[0] - f1[1])
    mean, low, high = paired_interval(diffs, [0.0] * len(diffs), rounds=5000)
    publish([f"feedback adapter - shipped adapter, token-F1 over {len(diffs)} answerable report questions: "
             f"{mean:+.3f} (95% paired bootstrap interval {low:+.3f} .. {high:+.3f})"],
            RESULTS / "feedback_loop_paired.md")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--helpful", type=float, default=0.4, help="token-F1 at or above which an answer is rated helpful")
    parser.add_argument("--unhelpful", type=float, default=0.15, help="token-F1 below which it is rated unhelpful")
    parser.add_argument("--paired", action="store_true",
                        help="only compare the two adapters' cached report answers (after benchs/quality/answer_trust.py)")
    args = parser.parse_args()
    if args.paired:
        paired(args.data)
        return

    shutil.rmtree(WORK, ignore_errors=True)
    service = KbqaService.load(Settings(home=BENCH_HOME))   # answers as served by default
    service.feedback = FeedbackStore(WORK / "feedback.sqlite")
    counts = simulate_log(service, args.data, args.helpful, args.unhelpful)

    examples = read_examples(SHIPPED_EXAMPLES)
    service.ingest(KB, collection="kb")
    kb_pairs = mined_faq_examples(service.collection("kb"), service.settings.prompt_passages)
    examples += kb_pairs
    for name in ANSWER_DATASETS:
        collection = service.collection(name.replace("_", "-"))
        made = feedback_examples(collection, service.feedback.training_answers(collection.name),
                                 service.settings.prompt_passages)
        counts[f"{name}: feedback examples"] = len(made)
        examples += made
    for key, value in sorted(counts.items()):
        print(f"{key}: {value}", flush=True)
    print(f"training on {len(examples)} examples ({len(kb_pairs)} kb/ FAQ pairs); CPU: {describe()}", flush=True)
    report = train_generator(model_path(service.home.models_dir, GENERATOR_BASE), examples, WORK / "models",
                             GeneratorTrainConfig(), show_progress=True,
                             source=f"shipped examples + {len(kb_pairs)} FAQ pairs of kb + simulated tune-split feedback")
    report["log"] = dict(counts)
    (WORK / "report.json").write_text(json.dumps(report, indent=1))
    print(f"adapter {WORK / 'models' / 'generator-adapters' / report['version']}: {report['examples']} examples "
          f"in {report['seconds']:.0f} s")


if __name__ == "__main__":
    main()
