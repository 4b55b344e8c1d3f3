"""Fit the multilingual encoder's cosine scale (retrieval/answering/cosine_scale.py): its question-passage cosines
mapped onto MiniLM's, on which the selector and the gap detector were fitted.

    python -m benchs.builders.fit_cosine_scale --data PATH/TO/shared/data

Label-free: the tune-split questions of emanualqa, techqa and the demo knowledge base are searched (hybrid, as
served) on each set's collection under MiniLM and under multilingual-e5-small; the cosines of the prompt's passages
(the top ``prompt_passages`` hits) are matched quantile to quantile. covid is left out: the multilingual knowledge
base the map is measured on (benchs/quality/multilingual_kb.py) is made of its documents.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import (BENCH_HOME, command_line, commit, dataset_files, load_questions, multilingual_collection,
                           open_collection, split_of)
from retrieval.answering.cosine_scale import SHIPPED_MULTILINGUAL_SCALE, CosineScale
from retrieval.answering.engines.cpu import describe
from serve.service import KbqaService
from serve.settings import Settings

DATASETS = ("emanualqa", "techqa_dev", "plausible_docs")
QUESTION_WORDS = 120


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=SHIPPED_MULTILINGUAL_SCALE)
    args = parser.parse_args()
    settings = Settings(home=BENCH_HOME)
    service = KbqaService.load(settings, with_generator=False)
    cosines: dict[str, list[float]] = {"minilm": [], "multilingual": []}
    questions = 0
    for name in DATASETS:
        pairs = {"minilm": open_collection(service, args.data, name),
                 "multilingual": multilingual_collection(service, args.data, name)}
        asked = [" ".join(q["question"].split()[:QUESTION_WORDS])
                 for q in load_questions(dataset_files(args.data, name)[1]) if split_of(q["id"]) == "tune"]
        questions += len(asked)
        for encoder, collection in pairs.items():
            for question in asked:
                hits = collection.search(question, settings.prompt_passages)
                cosines[encoder] += [h.dense_score for h in hits if h.dense_score is not None]
        print(f"{name}: {len(asked)} questions", flush=True)
    scale = CosineScale.fit(cosines["multilingual"], cosines["minilm"], report={
        "command": command_line(), "commit": commit(), "cpu": describe(), "datasets": list(DATASETS),
        "questions": questions, "cosines": {k: len(v) for k, v in cosines.items()},
        "medians": {k: round(float(np.median(v)), 4) for k, v in cosines.items()}})
    args.out.write_text(json.dumps(scale.to_dict(), indent=1) + "\n")
    for q in (0.1, 0.5, 0.9):
        e5 = float(np.quantile(cosines["multilingual"], q))
        minilm = float(np.quantile(cosines["minilm"], q))
        print(f"quantile {q}: multilingual {e5:.3f} -> {scale(e5):.3f} (MiniLM {minilm:.3f})")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
