"""Retrieval rows for the answer benchmarks: every question of every dev set, its top hits, on the full knowledge
base and on the knowledge-gap version of it. Cached, so the answer systems are compared on the same retrieval.

The knowledge-gap protocol: in file order, the gold documents of every 4th question are removed from the knowledge
base (collection ``<set>-gap``). A question whose gold documents are all gone is a *gap* question (it should be
refused); one that lost only some is dropped; the rest stay answerable.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from benchs.common import BENCH_HOME, dataset_files, ingest_records, load_questions, open_collection, split_of

DATASETS = ("emanualqa", "covid_faq_deepset", "techqa_dev")
HITS = 5


def is_answerable(question: dict) -> bool:
    return bool(question.get("answerable", True) and question.get("gold_ids"))


def gap_protocol(questions: list[dict]) -> tuple[set[str], dict[str, str]]:
    """(removed document ids, question id -> "gap" | "answerable" | "dropped") for answerable questions."""
    answerable = [q for q in questions if is_answerable(q)]
    removed = {d for i, q in enumerate(answerable) if i % 4 == 3 for d in q["gold_ids"]}
    status = {}
    for q in answerable:
        lost = set(q["gold_ids"]) & removed
        status[q["id"]] = "answerable" if not lost else "gap" if lost == set(q["gold_ids"]) else "dropped"
    return removed, status


def _hit(h) -> dict:
    c = h.chunk
    return {"doc_id": c.doc_id, "chunk_id": c.chunk_id, "title": c.title, "heading": c.heading,
            "context": c.context, "text": c.text, "score": h.score, "dense": h.dense_score}


def retrieval_rows(service, data: Path, name: str, split: str) -> list[dict]:
    """One row per question of the split: its hits on the full KB, and (gap protocol) on the gap KB."""
    cache = BENCH_HOME / "answer-rows" / f"{name}-{split}.jsonl"
    if cache.exists():
        return [json.loads(line) for line in cache.read_text().splitlines()]
    kb_path, questions_path = dataset_files(data, name)
    questions = load_questions(questions_path)
    kb_rows = [line + "\n" for line in kb_path.read_text().splitlines() if line.strip()]
    removed, status = gap_protocol(questions)
    full = open_collection(service, data, name)   # the same collection the other answer benchmarks use
    gap_name = name.replace("_", "-") + "-gap"
    gap = ingest_records(service, "".join(r for r in kb_rows if json.loads(r)["id"] not in removed).encode(),
                         gap_name, gap_name)
    rows = []
    for q in questions:
        if split_of(q["id"]) != split:
            continue
        rows.append({"id": q["id"], "dataset": name, "question": q["question"], "reference": q.get("answer") or "",
                     "gold_ids": q.get("gold_ids") or [], "answerable": is_answerable(q),
                     "gap_status": status.get(q["id"], "unanswerable"),
                     "hits": [_hit(h) for h in full.search(q["question"], HITS)],
                     "gap_hits": [_hit(h) for h in gap.search(q["question"], HITS)]})
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.move(tmp, cache)
    return rows
