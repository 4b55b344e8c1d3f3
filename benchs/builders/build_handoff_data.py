"""Build the hand-off classifier's labelled set (issue 17, 1): benchs/data/handoff/messages.jsonl.

    python -m benchs.builders.build_handoff_data --data PATH/TO/shared/data

Positives and hard negatives are written by the project (written.jsonl: asking for a person, frustration, and
questions that use the same words without asking for either). The easy negatives are real customer questions, 60
from each of three public sets (Apache-2.0; LICENSE.md names them). Each message gets a split from a hash of its
text: the lexicon is read against ``tune`` only, ``report`` is what benchs/quality/handoff_quality.py reports.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
from pathlib import Path

from benchs.common import REPO

HERE = REPO / "benchs" / "data" / "handoff"
QUESTION_FILES = {"emanualqa": "emanualqa/normalized/questions.jsonl",
                  "covid_faq_deepset": "covid_faq_deepset/normalized/questions.jsonl",
                  "techqa_dev": "techqa_dev/questions.jsonl"}
PER_SOURCE = 60


def split_of(text: str) -> str:
    return "tune" if int(hashlib.sha1(text.encode()).hexdigest(), 16) % 2 else "report"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()
    rows = [json.loads(line) for line in (HERE / "written.jsonl").read_text().splitlines()]
    for name, path in QUESTION_FILES.items():
        questions = [json.loads(line)["question"] for line in (args.data / path).read_text().splitlines()]
        # TechQA posts are "title    body": the title is what a customer would type into a chat box.
        questions = [q.split("    ")[0].strip()[:300] for q in questions]
        for text in random.Random(0).sample(sorted(set(questions)), PER_SOURCE):
            rows.append({"text": text, "label": "none", "source": name})
    with (HERE / "messages.jsonl").open("w") as out:
        for row in rows:
            out.write(json.dumps({**row, "split": split_of(row["text"])}) + "\n")
    print(f"{len(rows)} messages -> {HERE / 'messages.jsonl'}")


if __name__ == "__main__":
    main()
