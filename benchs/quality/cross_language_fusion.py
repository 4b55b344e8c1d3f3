"""Should a question in a language the knowledge base is not written in fuse BM25 at all (issue 29)? Today such a
question is ranked by the multilingual encoder alone (retrieval/collection.py), chosen on a first run's Spanish rows;
this asks it again at every dense weight of hybrid fusion, on a distilled multilingual copy, with BM25 analysing each
question in its own language (retrieval/bm25.py), where product names and codes kept in English can still match.

    python -m benchs.quality.cross_language_fusion --data PATH/TO/shared/data [--dataset emanualqa] [--copy -distilled]

The collection is ``<dataset>-multilingual<copy>`` in .kbqa-bench (benchs/quality/multilingual_distill.py makes it);
the questions are the translated report-split sample (benchs/data/translated-questions/, machine translation). Rows:
nDCG@10 per dense weight (1.0: the encoder alone, as served), the gold document ranked where its best chunk ranks.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import BENCH_HOME, MAX_QUESTION_WORDS, REPO, dataset_files, load_questions, publish
from distill.fusion_fit import GRID, fused
from distill.metrics import ranking_metrics
from retrieval.collection import Collection
from retrieval.encoder import SentenceEncoder, encode_queries
from serve.service import KbqaService
from serve.settings import Settings

TRANSLATED = REPO / "benchs" / "data" / "translated-questions"
DEPTH = 160   # what search(k=40) fuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--dataset", default="emanualqa")
    parser.add_argument("--copy", default="-distilled", help="which copy of the multilingual collection")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    service = KbqaService.load(Settings(home=BENCH_HOME), with_generator=False)
    name = f"{args.dataset.replace('_', '-')}-multilingual{args.copy}"
    collection = Collection(BENCH_HOME / "collections" / name, service.encoder, encoder_loader=SentenceEncoder,
                            named_encoder=service.named_encoder)
    collection.refresh()
    rows = [json.loads(line) for line in (TRANSLATED / f"{args.dataset}.jsonl").read_text().splitlines()]
    gold = {q["id"]: set(q["gold_ids"]) for q in load_questions(dataset_files(args.data, args.dataset)[1])}
    texts = [" ".join(r["translation"].split()[:MAX_QUESTION_WORDS]) for r in rows]
    snapshot = collection.snapshot()
    _, ids = snapshot.index.search(encode_queries(snapshot.encoder, texts), DEPTH)
    dense = [[int(i) for i in row if i >= 0] for row in ids]
    lexical = [[key for key, _ in snapshot.bm25.search(text, DEPTH, language=r["language"])]
               for text, r in zip(texts, rows)]
    chunks = collection.store.chunks_by_faiss_ids(sorted({key for lists in (dense, lexical) for row in lists
                                                          for key in row}))
    scores = defaultdict(list)
    for i, row in enumerate(rows):
        for weight in GRID:
            docs = list(dict.fromkeys(chunks[key].doc_id for key in fused(dense[i], lexical[i], weight, 40)
                                      if key in chunks))[:10]
            scores[(row["language"], weight)].append(ranking_metrics(docs, gold[row["id"]])["nDCG@10"])
    languages = sorted({r["language"] for r in rows})
    lines = [f"{name}: nDCG@10 of the translated report-split sample by hybrid fusion's dense weight (1.0: the encoder "
             "alone, as served for a language the knowledge base is not in).", "",
             "| dense weight | " + " | ".join(f"{language} (n={len(scores[(language, 1.0)])})"
                                             for language in languages) + " | mean |",
             "|---|" + "---|" * (len(languages) + 1)]
    for weight in GRID:
        cells = [statistics.mean(scores[(language, weight)]) for language in languages]
        lines.append(f"| {weight:.1f} | " + " | ".join(f"{c:.3f}" for c in cells) + f" | {statistics.mean(cells):.3f} |")
    collection.close()
    publish(lines, args.out or REPO / "benchs" / "results" / f"cross_language_fusion_{args.dataset}.md")


if __name__ == "__main__":
    main()
