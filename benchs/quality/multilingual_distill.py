"""A multilingual collection distilled (issue 29, 3): the multilingual encoder teaching a copy of itself on the
collection's chunks, as `kbqa distill` now does for a collection it serves; does retrieval move, in English and
across languages?

    python -m benchs.quality.multilingual_distill --data PATH/TO/shared/data [--dataset covid_faq_deepset]

Base: the dataset in a collection served by the multilingual encoder (`kbqa ingest --encoder multilingual`). A copy
of it is distilled the product's way (pseudo-queries of its chunks and the teacher LLM's committed questions,
benchs/data/teacher-questions/; never the set's real questions) and served only if the gate promotes it. Both are
asked the set's sample of report-split questions in English and machine-translated into de, es, fr, ja and zh
(benchs/data/translated-questions/), searched as served (hybrid for English, the encoder alone across languages);
nDCG@10 per language, and the gate's held-out figures.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import (BENCH_HOME, MAX_QUESTION_WORDS, REPO, TEACHER_QUESTIONS, dataset_files, load_questions,
                           multilingual_collection, publish, ranked_docs, synthetic_questions)
from distill.config import DistillConfig
from distill.metrics import ranking_metrics
from distill.run import distill_collection
from retrieval.collection import Collection
from retrieval.encoder import SentenceEncoder
from serve.service import KbqaService
from serve.settings import Settings

TRANSLATED = REPO / "benchs" / "data" / "translated-questions"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--dataset", default="covid_faq_deepset")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    name = args.dataset
    settings = Settings(home=BENCH_HOME)
    service = KbqaService.load(settings, with_generator=False)
    base = multilingual_collection(service, args.data, name)
    copy_dir = base.directory.with_name(base.directory.name + "-distilled")
    shutil.rmtree(copy_dir, ignore_errors=True)
    shutil.copytree(base.directory, copy_dir, ignore=shutil.ignore_patterns("encoders", "teacher_cache.sqlite"))
    committed = TEACHER_QUESTIONS / f"{name.replace('_', '-')}.sqlite"
    if committed.exists():   # the same chunks as the English collection's: its committed teacher questions apply
        shutil.copyfile(committed, copy_dir / "teacher-questions.sqlite")
    distilled = Collection(copy_dir, service.encoder, encoder_loader=SentenceEncoder,
                           named_encoder=service.named_encoder)
    synthetic = synthetic_questions(distilled)
    start = time.perf_counter()
    report = distill_collection(distilled, settings.kbqa_home.models_dir, DistillConfig(full=True),
                                show_progress=True, synthetic_questions=synthetic)
    seconds = time.perf_counter() - start
    print(report.reason, flush=True)

    rows = [json.loads(line) for line in (TRANSLATED / f"{name}.jsonl").read_text().splitlines()]
    gold = {q["id"]: set(q["gold_ids"]) for q in load_questions(dataset_files(args.data, name)[1])}
    asks = [(qid, "en", text) for qid, text in {r["id"]: r["question"] for r in rows}.items()] + \
        [(r["id"], r["language"], r["translation"]) for r in rows]
    scores: dict = defaultdict(list)
    for system, collection in (("multilingual-e5-small", base), ("after `kbqa distill`", distilled)):
        for qid, language, text in asks:
            hits = collection.search(" ".join(text.split()[:MAX_QUESTION_WORDS]), 40)
            scores[(system, language)].append(ranking_metrics(ranked_docs(hits), gold[qid])["nDCG@10"])
    languages = ["en"] + sorted({language for _, language in scores} - {"en"})
    systems = list(dict.fromkeys(system for system, _ in scores))
    lines = [f"{name}, served by the multilingual encoder, before and after `kbqa distill` (one run). The distilled "
             f"copy: {report.reason}; {report.triples} triples, {report.synthetic_questions} teacher-LLM questions "
             f"({report.synthetic_held_out} held out), {seconds:.0f} s; promoted: {report.promoted}.", "",
             "Held-out figures the gate read (MRR@10, serving -> student): pseudo-queries "
             f"{report.serving['mrr@10']:.3f} -> {report.student['mrr@10']:.3f}"
             + (f"; synthetic questions {report.serving_synthetic['mrr@10']:.3f} -> "
                f"{report.student_synthetic['mrr@10']:.3f}" if report.serving_synthetic else "") + ".", "",
             "nDCG@10 on the report-split sample, as served:", "",
             "| system | " + " | ".join(f"{language} (n={len(scores[(systems[0], language)])})"
                                      for language in languages) + " | mean of the translations |",
             "|---|" + "---|" * (len(languages) + 1)]
    for system in systems:
        cells = [statistics.mean(scores[(system, language)]) for language in languages]
        lines.append(f"| {system} | " + " | ".join(f"{c:.3f}" for c in cells) + f" | {statistics.mean(cells[1:]):.3f} |")
    distilled.close()
    publish(lines, args.out or REPO / "benchs" / "results" / f"multilingual_distill_{name}.md")


if __name__ == "__main__":
    main()
