"""A multilingual collection distilled (issue 29, 3): the multilingual encoder teaching a copy of itself on the
collection's chunks, as `kbqa distill` now does for a collection it serves; does retrieval move, in English and
across languages?

    python -m benchs.quality.multilingual_distill --data PATH/TO/shared/data [--dataset covid_faq_deepset]

Base: the dataset in a collection served by the multilingual encoder (`kbqa ingest --encoder multilingual`). A copy
of it is distilled the product's way (pseudo-queries of its chunks and the teacher LLM's committed questions,
benchs/data/teacher-questions/; never the set's real questions) and served only if the gate promotes it. Both are
asked the set's sample of report-split questions in English and machine-translated into de, es, fr, ja and zh
(benchs/data/translated-questions/), searched as served (hybrid for English, the encoder alone across languages);
nDCG@10 per language, and the gate's held-out figures. Then the relevance floor as served (e5's 0.84, read through
a distilled encoder's own cosine map, retrieval/answering/cosine_scale.py): the share of these answerable questions
it refuses (no top-5 passage at or above it), and of the other set's sample asked here (off-topic), beside the
distilled encoder read with e5's floor as it is.

``--reuse``: measure the distilled copy a previous run left (no distillation); one promoted before kbqa fitted
cosine maps gets its map fitted here as `kbqa distill` fits it (distill.run.student_scale), on the teacher-LLM
questions.
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

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import (BENCH_HOME, MAX_QUESTION_WORDS, REPO, TEACHER_QUESTIONS, dataset_files, load_questions,
                           multilingual_collection, publish, ranked_docs, synthetic_questions,
                           top_cosine)
from distill.config import DistillConfig
from distill.metrics import ranking_metrics
from distill.run import distill_collection, student_scale
from retrieval.answering.cosine_scale import COLLECTION_SCALE_META
from retrieval.collection import Collection
from retrieval.encoder import SentenceEncoder, encode_queries
from serve.service import KbqaService
from serve.settings import Settings

TRANSLATED = REPO / "benchs" / "data" / "translated-questions"


def floor_rows(service, base, distilled, asks: list[tuple], other: str) -> list[str]:
    rows = [json.loads(line) for line in (TRANSLATED / f"{other}.jsonl").read_text().splitlines()]
    off_topic = [r["translation"] for r in rows] + list(dict.fromkeys(r["question"] for r in rows))
    answerable = [" ".join(text.split()[:MAX_QUESTION_WORDS]) for _, _, text in asks]
    off_topic = [" ".join(text.split()[:MAX_QUESTION_WORDS]) for text in off_topic]
    rows = [f"Relevance floor on {len(answerable)} answerable questions (all languages) and {len(off_topic)} off-topic "
            f"ones ({other}'s sample, all languages):", "",
            "| encoder | floor | answerable refused | off-topic refused |", "|---|---|---|---|"]
    floor_e5 = service.settings.multilingual_min_relevance
    floor_own, _ = service.cosine_reading(distilled)
    # Each collection's best cosines once; the relevance gate refuses a question when its best is under the floor.
    tops = {id(c): ([top_cosine(c, t) for t in answerable], [top_cosine(c, t) for t in off_topic])
            for c in (base, distilled)}
    for label, collection, floor in (("multilingual-e5-small", base, floor_e5),
                                     ("distilled, read with e5's floor as it is", distilled, floor_e5),
                                     ("distilled, floor through its own map (served)", distilled, floor_own)):
        on, off = (statistics.mean(top < floor for top in group) for group in tops[id(collection)])
        rows.append(f"| {label} | {floor:.3f} | {on:.3f} | {off:.3f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--dataset", default="covid_faq_deepset")
    parser.add_argument("--other", default=None, help="the set whose sample is asked as off-topic questions")
    parser.add_argument("--reuse", action="store_true", help="measure the distilled copy a previous run left")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    name = args.dataset
    other = args.other or ("emanualqa" if name != "emanualqa" else "covid_faq_deepset")
    settings = Settings(home=BENCH_HOME)
    service = KbqaService.load(settings, with_generator=False)
    base = multilingual_collection(service, args.data, name)
    copy_dir = base.directory.with_name(base.directory.name + "-distilled")
    notes = []
    if not args.reuse:
        shutil.rmtree(copy_dir, ignore_errors=True)
        shutil.copytree(base.directory, copy_dir, ignore=shutil.ignore_patterns("encoders", "teacher_cache.sqlite"))
        committed = TEACHER_QUESTIONS / f"{name.replace('_', '-')}.sqlite"
        if committed.exists():   # the same chunks as the English collection's: its committed teacher questions apply
            shutil.copyfile(committed, copy_dir / "teacher-questions.sqlite")
    distilled = Collection(copy_dir, service.encoder, encoder_loader=SentenceEncoder,
                           named_encoder=service.named_encoder)
    distilled.refresh()   # serving what its store says (a promoted copy: its own encoder), before it is read
    if not args.reuse:
        start = time.perf_counter()
        report = distill_collection(distilled, settings.kbqa_home.models_dir, DistillConfig(full=True),
                                    show_progress=True, synthetic_questions=synthetic_questions(distilled))
        notes += [f"The distilled copy: {report.reason}; {report.triples} triples, {report.synthetic_questions} "
                  f"teacher-LLM questions ({report.synthetic_held_out} held out), "
                  f"{time.perf_counter() - start:.0f} s; promoted: {report.promoted}.", "",
                  "Held-out figures the gate read (MRR@10, serving -> student): pseudo-queries "
                  f"{report.serving['mrr@10']:.3f} -> {report.student['mrr@10']:.3f}"
                  + (f"; synthetic questions {report.serving_synthetic['mrr@10']:.3f} -> "
                     f"{report.student_synthetic['mrr@10']:.3f}" if report.serving_synthetic else "") + ".", ""]
        print(report.reason, flush=True)
    elif distilled.encoder_dir is not None and distilled.cosine_scale() is None:
        questions = [q.question for q in synthetic_questions(distilled)]
        chunk_ids = [c.chunk_id for c in distilled.store.all_chunks()]
        stored = [c.store.vectors_for(chunk_ids) for c in (distilled, base)]
        vectors = [np.stack([by_id[i] for i in chunk_ids]) for by_id in stored]
        scale = student_scale(([encode_queries(distilled.encoder, questions)], vectors[0]),
                              ([encode_queries(base.encoder, questions)], vectors[1]), None)
        with distilled.store.transaction():
            distilled.store.set_meta(COLLECTION_SCALE_META, json.dumps({"encoder": distilled.encoder.encoder_id,
                                                                        "scale": scale.to_dict()}))
        notes += [f"The copy was promoted before kbqa fitted cosine maps: its map fitted now on {len(questions)} "
                  f"teacher-LLM questions (distill.run.student_scale).", ""]

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
    lines = [f"{name}, served by the multilingual encoder, before and after `kbqa distill` (one run).", "", *notes,
             "nDCG@10 on the report-split sample, as served:", "",
             "| system | " + " | ".join(f"{language} (n={len(scores[(systems[0], language)])})"
                                      for language in languages) + " | mean of the translations |",
             "|---|" + "---|" * (len(languages) + 1)]
    for system in systems:
        cells = [statistics.mean(scores[(system, language)]) for language in languages]
        lines.append(f"| {system} | " + " | ".join(f"{c:.3f}" for c in cells)
                     + f" | {statistics.mean(cells[1:]):.3f} |")
    lines += ["", *floor_rows(service, base, distilled, asks, other), ""]
    distilled.close()
    publish(lines, args.out or REPO / "benchs" / "results" / f"multilingual_distill_{name}.md")


if __name__ == "__main__":
    main()
