"""Examples for fitting the sentence selector and the gap detector (distill/selector_train.py).

    python -m benchs.builders.build_selector_data --data PATH/TO/shared/data [--split tune] [--out distill/data/selector_examples.jsonl]

The prompt passages are the ones serving would show: the top hits that pass the relevance gate
(Settings.min_relevance), at most Settings.prompt_passages. ``answerable``: the full knowledge base and the
reference answer; ``gap``: a knowledge-gap question on the gap knowledge base, or a TechQA unanswerable question.
"""
from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import ANSWER_DATASETS, BENCH_HOME, retrieval_rows, write_rows


def prompt_passages(hits: list[dict], min_relevance: float, count: int) -> list[dict]:
    return [{"context": h["context"], "text": h["text"], "dense": h["dense"]}
            for h in hits if (h["dense"] if h["dense"] is not None else -1.0) >= min_relevance][:count]


def examples_of(row: dict, min_relevance: float, count: int) -> list[dict]:
    base = {"id": row["id"], "question": row["question"], "dataset": row["dataset"]}
    out = []
    if row["answerable"]:
        out.append({**base, "kind": "answerable", "reference": row["reference"],
                    "passages": prompt_passages(row["hits"], min_relevance, count)})
    else:
        out.append({**base, "kind": "gap", "reference": None,
                    "passages": prompt_passages(row["hits"], min_relevance, count)})
    if row["gap_status"] == "gap":
        out.append({**base, "id": row["id"] + ":gap", "kind": "gap", "reference": None,
                    "passages": prompt_passages(row["gap_hits"], min_relevance, count)})
    return out


def main() -> None:
    from serve.service import KbqaService
    from serve.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="tune", choices=("tune", "report"))
    parser.add_argument("--out", type=Path, default=Path("distill/data/selector_examples.jsonl"))
    args = parser.parse_args()
    settings = Settings()
    service = KbqaService.load(Settings(home=BENCH_HOME), with_generator=False)
    examples = [e for name in ANSWER_DATASETS for row in retrieval_rows(service, args.data, name, args.split)
                for e in examples_of(row, settings.min_relevance, settings.prompt_passages)]
    write_rows(args.out, examples, Counter(f"{e['dataset']}: {e['kind']}" for e in examples), "examples")


if __name__ == "__main__":
    main()
