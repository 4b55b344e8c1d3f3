"""Hybrid search's dense weight: what the real questions of each dev set would choose, against what the teacher LLM's
held-out questions choose label-free (distill/fusion_fit.py, as `kbqa distill` fits it).

For each set, the collection searched is the student that `distill_quality --synthetic` distilled with synthetic
questions (``<set>-synthetic`` in .kbqa-bench; the base collection with the default encoder when that is missing).
Rows: nDCG@10 of the served hybrid search (the gold document ranked where its best chunk ranks) at every grid weight,
on the tune and report halves of the real questions, then MRR@10 of the synthetic held-out questions (chunk as
gold); the ``fitted`` column is the weight the synthetic questions pick.

    .venv/bin/python -m benchs.quality.fusion_weight --data PATH/TO/shared/data
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import threading
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import BENCH_HOME, dataset_files, load_questions, publish, ranked_docs, split_of, teacher_cache_path
from distill.fusion_fit import GRID, MIN_QUESTIONS, choose_weight, fused, rankings, weight_table
from distill.metrics import ranking_metrics
from distill.pseudo_queries import PseudoQuery
from distill.teacher_questions import QuestionCache, cached_questions, held_out_questions
from retrieval.answering.grounding import content_words
from retrieval.collection import Collection
from retrieval.encoder import SentenceEncoder
from serve.service import KbqaService
from serve.settings import Settings


def real_table(collection: Collection, questions: list[dict]) -> dict[float, float]:
    """nDCG@10 per weight; each question's two rankings are taken once and fused per weight (distill/fusion_fit.py),
    checked against the served search at one weight first."""
    texts = [q["question"] for q in questions]
    dense, lexical, chunks = rankings(collection, texts, depth=160)   # what search(k=40) fuses

    def ranked(i: int, weight: float) -> list[str]:
        keys = fused(dense[i], lexical[i], weight, 40)
        return list(dict.fromkeys(chunks[key].doc_id for key in keys if key in chunks))[:10]

    served = dataclasses.replace(collection.snapshot(), dense_weight=0.7)
    check = ranked_docs(served.search(texts[0], 40, "hybrid", collection.store, threading.RLock()))
    assert ranked(0, 0.7) == check, "offline fusion differs from the served search"
    return {w: sum(ranking_metrics(ranked(i, w), set(q["gold_ids"]))["nDCG@10"] for i, q in enumerate(questions))
            / len(questions) for w in GRID}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--datasets", nargs="*", default=["emanualqa", "covid_faq_deepset", "techqa_dev"])
    parser.add_argument("--out", type=Path, default=Path("benchs/results/fusion_weight.md"))
    args = parser.parse_args()
    service = KbqaService.load(Settings(home=BENCH_HOME), with_generator=False)
    head = " | ".join(f"{w:.1f}" for w in GRID)
    lines = [f"| dataset | collection | questions | n | {head} | best | fitted (synthetic) | at fitted | at 0.5 |",
             "|---|---|---|---|" + "---|" * (len(GRID) + 4)]
    for name in args.datasets:
        base = BENCH_HOME / "collections" / name.replace("_", "-")
        folder = base.with_name(base.name + "-synthetic")
        folder = folder if folder.is_dir() else base
        collection = Collection(folder, service.encoder, encoder_loader=SentenceEncoder)
        cache = QuestionCache(teacher_cache_path(base))
        chunks = collection.store.all_chunks()
        doc_of = {c.chunk_id: c.doc_id for c in chunks}
        held = [PseudoQuery(q.question, q.chunk_id, doc_of[q.chunk_id], "synthetic")
                for q in held_out_questions(cached_questions(chunks, cache))]
        cache.close()
        synthetic = weight_table(collection, held) if len(held) >= MIN_QUESTIONS else {}
        fitted = choose_weight(synthetic) if synthetic else 0.5
        # A route to measure: written from the chunk, synthetic questions share more of its words than customers'
        # do, which favours BM25; the half that shares least is closer to a customer's wording.
        text_of = {c.chunk_id: c.context + " " + c.text for c in chunks}
        shares = [len(content_words(q.text) & content_words(text_of[q.chunk_id])) / max(1, len(content_words(q.text)))
                  for q in held]
        median = sorted(shares)[len(shares) // 2] if shares else 0.0
        paraphrased = [q for q, share in zip(held, shares) if share <= median]
        questions = [q for q in load_questions(dataset_files(args.data, name)[1]) if q.get("gold_ids")]
        tables = [(split, real_table(collection, [q for q in questions if split_of(q["id"]) == split]),
                   sum(split_of(q["id"]) == split for q in questions)) for split in ("tune", "report")]
        tables.append(("synthetic held-out (MRR@10)", synthetic, len(held)))
        tables.append(("synthetic held-out, the half sharing fewer of the chunk's words (MRR@10)",
                       weight_table(collection, paraphrased) if len(paraphrased) >= MIN_QUESTIONS // 2 else {},
                       len(paraphrased)))
        for label, table, n in tables:
            if not table:
                lines.append(f"| {name} | {folder.name} | {label} | {n} | " + " | ".join("-" for _ in GRID)
                             + " | - | - | - | - |")
                continue
            best = max(GRID, key=lambda w: table[w])
            lines.append(f"| {name} | {folder.name} | {label} | {n} | " + " | ".join(f"{table[w]:.3f}" for w in GRID)
                         + f" | {best:.1f} | {fitted:.1f} | {table[fitted]:.3f} | {table[0.5]:.3f} |")
            print(lines[-1], flush=True)
        collection.close()
    lines += ["", "Real questions: nDCG@10 of the served hybrid search (retrieval/search.py) at each dense weight; "
              "0.5 is the equal-weight fusion served before fitting. Synthetic: the teacher LLM's held-out questions "
              "(the 10-30% `kbqa distill` holds out, by question hash), chunk MRR@10; `fitted` is what distill/fusion_fit.py chooses from "
              "them (smoothed over grid neighbours; ties nearest 0.5)."]
    publish(lines, args.out)
    service.close()


if __name__ == "__main__":
    main()
