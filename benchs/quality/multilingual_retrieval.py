"""Cross-lingual retrieval (issue 29): the dev sets' questions, machine-translated, against their English knowledge
bases; today's English pipeline beside the multilingual encoder, and what each costs.

    python -m benchs.quality.multilingual_retrieval --data PATH/TO/shared/data

The questions are a fixed sample of each set's report split translated by the teacher LLM
(benchs/builders/translate_questions.py: Qwen2.5-Coder-1.5B, machine translation by a small model; its
back-translation check is summarised here). Each knowledge base is ingested twice the product's way: as today (the
English MiniLM encoder, picked because the documents are English) and with ``kbqa ingest --encoder multilingual``
(multilingual-e5-small, retrieval/e5_port.py). A document ranks where its best chunk ranks; nDCG@10 against the
question's gold documents. The target: every set and language at >= 90% of the same pipeline's English nDCG@10.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import (BENCH_HOME, MAX_QUESTION_WORDS, REPO, dataset_files, load_questions, multilingual_collection,
                           open_collection, publish, ranked_docs)
from distill.metrics import ranking_metrics
from ingest.language import question_language
from retrieval.encoder import SentenceEncoder, encode_queries
from retrieval.models import MULTILINGUAL, STUDENT_START, model_path
from serve.service import KbqaService
from serve.settings import Settings

TRANSLATED = REPO / "benchs" / "data" / "translated-questions"
DATASETS = ("emanualqa", "covid_faq_deepset", "techqa_dev")
# "served" is what the product does (collection.search's hybrid: dense alone for a question in a language none of the
# documents are in); "always hybrid" fuses BM25 whatever the question's language (the choice before that rule).
SYSTEMS = (("today", "hybrid"), ("today", "dense"), ("multilingual", "always hybrid"), ("multilingual", "dense"),
           ("multilingual", "served"))


def search(collection, text: str, mode: str) -> list:
    if mode == "always hybrid":   # the snapshot's own hybrid search, under the collection's language rule
        return collection.snapshot().search(text, 40, "hybrid", collection.store, threading.RLock())
    return collection.search(text, 40, "hybrid" if mode == "served" else mode)


def asked(text: str) -> str:
    return " ".join(text.split()[:MAX_QUESTION_WORDS])   # long TechQA questions cut as the answer benchmarks cut them


def speed_rows(data: Path, models_dir: Path) -> list[str]:
    """Passages/s (batch 32) and one-query latency of both encoders on the same texts, same CPU."""
    kb, questions_path = dataset_files(data, "covid_faq_deepset")
    passages = [json.loads(line)["text"] for line in kb.read_text().splitlines()[:128]]
    questions = [q["question"] for q in load_questions(questions_path)[:40]]
    rows = ["| encoder | passages/s (128 covid passages, batch 32) | query p50 ms | query p95 ms |",
            "|---|---|---|---|"]
    for name in (STUDENT_START, MULTILINGUAL):
        encoder = SentenceEncoder(model_path(models_dir, name), device="cpu")
        encoder.encode(passages[:8])   # warm-up
        start = time.perf_counter()
        encoder.encode(passages, batch_size=32)
        rate = len(passages) / (time.perf_counter() - start)
        latencies = []
        for question in questions:
            start = time.perf_counter()
            encode_queries(encoder, [question])
            latencies.append((time.perf_counter() - start) * 1000)
        latencies.sort()
        rows.append(f"| {name} | {rate:.1f} | {statistics.median(latencies):.1f} | "
                    f"{latencies[int(0.95 * (len(latencies) - 1))]:.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--speed-only", action="store_true", help="only the encoders' speed table (for a quiet CPU)")
    args = parser.parse_args()
    settings = Settings(home=BENCH_HOME)
    if args.speed_only:
        lines = speed_rows(args.data, settings.kbqa_home.models_dir)
        publish(lines, args.out or REPO / "benchs" / "results" / "multilingual_speed.md")
        print("\n".join(lines))
        return
    args.out = args.out or REPO / "benchs" / "results" / "multilingual_retrieval.md"
    service = KbqaService.load(settings, with_generator=False)
    scores: dict = defaultdict(list)   # (dataset, language, system, mode) -> nDCG@10 per question
    detected: Counter = Counter()
    for name in DATASETS:
        rows = [json.loads(line) for line in (TRANSLATED / f"{name}.jsonl").read_text().splitlines()]
        gold = {q["id"]: set(q["gold_ids"]) for q in load_questions(dataset_files(args.data, name)[1])}
        collections = {"today": open_collection(service, args.data, name),
                       "multilingual": multilingual_collection(service, args.data, name)}
        english = {row["id"]: row["question"] for row in rows}
        asks = [(qid, "en", text) for qid, text in english.items()] + \
            [(row["id"], row["language"], row["translation"]) for row in rows]
        for qid, language, text in asks:
            detected[(language, question_language(text) == language)] += 1
            for system, mode in SYSTEMS:
                hits = search(collections[system], asked(text), mode)
                scores[(name, language, system, mode)].append(
                    ranking_metrics(ranked_docs(hits), gold[qid])["nDCG@10"])
        print(name, "done", flush=True)

    languages = ["en"] + sorted({key[1] for key in scores} - {"en"})
    header = " | ".join(f"{s} {m}" for s, m in SYSTEMS)
    lines = [f"| dataset | language | n | {header} | multilingual served / its English |",
             "|---|---|---|" + "---|" * len(SYSTEMS) + "---|"]
    worst = 1.0
    for name in DATASETS:
        base = statistics.mean(scores[(name, "en", "multilingual", "served")])
        for language in languages:
            cells = [statistics.mean(scores[(name, language, s, m)]) for s, m in SYSTEMS]
            ratio = cells[4] / base if base else 0.0
            worst = min(worst, ratio) if language != "en" else worst
            lines.append(f"| {name} | {language} | {len(scores[(name, language, 'today', 'hybrid')])} | " +
                         " | ".join(f"{c:.3f}" for c in cells) + f" | {ratio:.0%} |")
    lines += ["", f"Worst set and language, multilingual served against its own English: **{worst:.0%}** (target 90%)."]
    mean_rows = ["", "| language | " + header + " |", "|---|" + "---|" * len(SYSTEMS)]
    for language in languages:
        cells = [statistics.mean(statistics.mean(scores[(n, language, s, m)]) for n in DATASETS) for s, m in SYSTEMS]
        mean_rows.append(f"| {language} (mean of the sets) | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
    lines += mean_rows
    back = [json.loads(line) for line in (TRANSLATED / "back-translation.jsonl").read_text().splitlines()] \
        if (TRANSLATED / "back-translation.jsonl").exists() else []
    by_language = defaultdict(list)
    for row in back:
        by_language[row["language"]].append(row["token_f1"])
    lines += ["", "Translation check: covid questions translated back into English by the same model, token-F1 "
              "against the original (1.0 = the same words):", "",
              "| language | n | back-translation token-F1 (mean) | share >= 0.5 | question language detected |",
              "|---|---|---|---|---|"]
    for language in languages:
        f1s = by_language.get(language, [])
        right, total = detected[(language, True)], detected[(language, True)] + detected[(language, False)]
        lines.append(f"| {language} | {len(f1s)} | " + (f"{statistics.mean(f1s):.3f} | "
                     f"{sum(f >= 0.5 for f in f1s) / len(f1s):.0%}" if f1s else "- | -") +
                     f" | {right}/{total} |")
    lines += ["", *speed_rows(args.data, settings.kbqa_home.models_dir)]
    publish(lines, args.out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
