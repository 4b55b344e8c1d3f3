"""Build the answerability scorer's shipped training pairs from the public QA sets (tune split only).

    python -m benchs.builders.build_answerability_data --data PATH/TO/shared/data

Writes distill/data/answerability_train.jsonl: one (question, passage, label) row a line. The passages are
what kbqa's own retrieval finds for the question (top 8), so the negatives are the hard ones the scorer
meets at answer time: label 1 for the gold passage (the chunk of a gold document sharing most words with
the reference answer; added even when retrieval missed it), 0 for chunks of other documents. Other chunks
of a gold document are left out: whether they hold the answer is unknown. TechQA's unanswerable questions
give only negatives. The report split stays unseen (benchs/quality/answerability_quality.py measures on it).
"""
from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import BENCH_HOME, passage_of, tune_questions, write_rows
from distill.generator_data import best_passage
from serve.service import KbqaService
from serve.settings import Settings

DEPTH = 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("distill/data/answerability_train.jsonl"))
    args = parser.parse_args()
    service = KbqaService.load(Settings(home=BENCH_HOME), with_generator=False)
    rows, counts = [], Counter()
    for name, collection, by_doc, q, question, gold_ids in tune_questions(service, args.data):
        answerable = bool(q.get("answerable", True) and gold_ids and q.get("answer"))
        pairs = []
        if answerable:
            gold = best_passage(q["answer"], [passage_of(c) for d in gold_ids for c in by_doc.get(d, [])])
            if gold is None:
                counts[f"{name}: no gold passage found"] += 1
                continue
            pairs.append((gold, 1))
        for hit in collection.search(question, DEPTH):
            if hit.chunk.doc_id not in gold_ids:
                pairs.append((passage_of(hit.chunk), 0))
        for passage, label in pairs:
            rows.append({"question": question, "title": passage["title"], "text": passage["text"],
                         "label": label, "source": f"{name}:{q['id']}"})
            counts[f"{name}: label {label}"] += 1
    write_rows(args.out, rows, counts, "pairs")


if __name__ == "__main__":
    main()
