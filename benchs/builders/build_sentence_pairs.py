"""Training pairs for the sentence scorer: (question, passage context, one unit of a prompt passage, label).

    python -m benchs.builders.build_sentence_pairs --data PATH/TO/shared/data [--out distill/data/sentence_pairs.jsonl]

From the *tune* halves only. For each answerable question, every unit of its top three hits on the full
knowledge base, labelled 1 when the extractive oracle (distill/metrics.py) picks it against the reference answer,
with a graded ``target``: the share of the unit's content words that the reference answer holds (on the tune
halves it separates the oracle's choices at AUC 0.86-0.89; the scorer may train on it, `--target target`).
For each knowledge-gap question (benchs/common.py), the units of its top three hits on the gap knowledge base,
all 0: the scorer learns that a near-topic sentence is not an answer. TechQA questions are cut to 120 words.
"""
from __future__ import annotations

import argparse
import os
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import ANSWER_DATASETS, BENCH_HOME, retrieval_rows, write_rows
from distill.metrics import oracle_selection
from retrieval.answering.grounding import content_words
from retrieval.answering.selection import split_units

PROMPT_PASSAGES = 3


def short(question: str, words: int = 120) -> str:
    return " ".join(question.split()[:words])


def _pairs(row: dict, hits: list[dict], reference: str | None) -> list[dict]:
    units = [(h, u) for n, h in enumerate(hits[:PROMPT_PASSAGES]) for u in split_units(h["text"], n)]
    chosen = set(oracle_selection([u.text for _, u in units], reference)) if reference else set()
    wanted = content_words(reference) if reference else set()
    return [{"question": short(row["question"]), "title": h["context"], "text": u.text, "label": int(i in chosen),
             "target": precision(u.text, wanted), "source": f"{row['dataset']}:{row['id']}"}
            for i, (h, u) in enumerate(units)]


def precision(text: str, wanted: set[str]) -> float:
    words = content_words(text)
    return round(len(words & wanted) / len(words), 4) if words and wanted else 0.0


def pairs_of(row: dict) -> list[dict]:
    pairs = _pairs(row, row["hits"], row["reference"]) if row["answerable"] else []
    if row["gap_status"] == "gap":
        pairs += _pairs(row, row["gap_hits"], None)
    return pairs


def main() -> None:
    from serve.service import KbqaService
    from serve.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("distill/data/sentence_pairs.jsonl"))
    args = parser.parse_args()
    service = KbqaService.load(Settings(home=BENCH_HOME), with_generator=False)
    pairs = [p for name in ANSWER_DATASETS for row in retrieval_rows(service, args.data, name, "tune") for p in pairs_of(row)]
    write_rows(args.out, pairs, Counter(f"label {p['label']}" for p in pairs), "pairs")


if __name__ == "__main__":
    main()
