"""Build the generator's shipped training set from the public QA sets (tune split only; report split stays unseen).

    python -m benchs.builders.build_generator_data --data PATH/TO/shared/data

Writes distill/data/generator_train.jsonl (see distill/data/ATTRIBUTION.md for sources and licences).
Passages come from kbqa's own retrieval over each dataset's collection: the gold passage (the chunk of a
gold document sharing most words with the reference answer) among the top retrieved non-gold chunks.
A quarter of answerable questions lose their gold passage and teach abstention, as do TechQA's
unanswerable questions (with what retrieval found for them).
"""
from __future__ import annotations

import argparse
import os
import random
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import BENCH_HOME, passage_of, tune_questions, write_rows
from distill.generator_data import best_passage, make_example
from serve.service import KbqaService
from serve.settings import Settings

# doc2dial has no licence: never shipped. plausible_docs is kb/ itself: its FAQ pairs are mined at train time.
ABSTAIN_SHARE = 0.25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--passages", type=int, default=Settings().prompt_passages)
    parser.add_argument("--out", type=Path, default=Path("distill/data/generator_train.jsonl"))
    args = parser.parse_args()
    service = KbqaService.load(Settings(home=BENCH_HOME), with_generator=False)
    rng = random.Random(0)
    examples, counts = [], Counter()
    for name, collection, by_doc, q, question, gold_ids in tune_questions(service, args.data):
        hits = collection.search(question, 8)
        distractors = [passage_of(h.chunk) for h in hits if h.chunk.doc_id not in gold_ids]
        answerable = bool(q.get("answerable", True) and gold_ids and q.get("answer"))
        gold = None
        if answerable:
            gold = best_passage(q["answer"], [passage_of(c) for d in gold_ids for c in by_doc.get(d, [])])
            if gold is None:
                counts[f"{name}: no gold passage found"] += 1
                continue
            if rng.random() < ABSTAIN_SHARE:
                gold = None
        example = make_example(question, q.get("answer") if gold else None, gold, distractors, args.passages, rng)
        example["source"] = f"{name}:{q['id']}"
        examples.append(example)
        counts[f"{name}: {'answer' if gold else 'abstain'}"] += 1
    write_rows(args.out, examples, counts, "examples")


if __name__ == "__main__":
    main()
