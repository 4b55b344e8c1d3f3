"""Build the generator's shipped training set from the public QA sets (tune split only; report split stays unseen).

    python benchs/build_generator_data.py --data PATH/TO/shared/data

Writes distill/data/generator_train.jsonl (see distill/data/ATTRIBUTION.md for sources and licences).
Passages come from kbqa's own retrieval over each dataset's collection: the gold passage (the chunk of a
gold document sharing most words with the reference answer) among the top retrieved non-gold chunks.
A quarter of answerable questions lose their gold passage and teach abstention, as do TechQA's
unanswerable questions (with what retrieval found for them).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import BENCH_HOME, dataset_files, load_questions, open_collection, split_of  # noqa: E402
from distill.generator_data import best_passage, make_example  # noqa: E402
from serve.service import KbqaService  # noqa: E402
from serve.settings import Settings  # noqa: E402

# doc2dial has no licence: never shipped. plausible_docs is kb/ itself: its FAQ pairs are mined at train time.
SOURCES = ("emanualqa", "covid_faq_deepset", "techqa_dev")
ABSTAIN_SHARE = 0.25
MAX_QUESTION_WORDS = 120


def passage_of(chunk) -> dict:
    return {"title": chunk.context, "text": chunk.text}


def write_rows(out: Path, rows: list[dict], counts: Counter, noun: str) -> None:
    """The built file (one JSON object a line) and what went into it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for key, value in sorted(counts.items()):
        print(f"{key}: {value}")
    print(f"{len(rows)} {noun} -> {out}")


def tune_questions(service, data: Path):
    """(dataset, its collection, chunks by document, question record, question text cut to size, gold ids)
    for every tune-split question of the shipped sources."""
    for name in SOURCES:
        collection = open_collection(service, data, name)
        by_doc: dict[str, list] = {}
        for chunk in collection.store.all_chunks():
            by_doc.setdefault(chunk.doc_id, []).append(chunk)
        for q in load_questions(dataset_files(data, name)[1]):
            if split_of(q["id"]) == "tune":
                question = " ".join(q["question"].split()[:MAX_QUESTION_WORDS])
                yield name, collection, by_doc, q, question, set(q.get("gold_ids") or [])


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
