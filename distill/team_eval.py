"""`kbqa eval`: quality on the team's own questions, before and after a change (a re-distillation,
new docs, a setting).

Questions are JSONL in the dev sets' format, ``{"question", "answer"?, "gold_ids"?, "answerable"?, "filter"?}``
(``filter``: that question's metadata filter, AND-ed with the run's ``--filter``). Retrieval
metrics need ``gold_ids`` (document ids of the collection); answer metrics need ``--ask`` and score against
``answer`` when given; abstention needs ``answerable: false`` questions. Every figure says over how many questions
it was taken, and a metric with no question to take it over is absent, not zero.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from distill.jsonl import read_jsonl
from distill.metrics import ranking_metrics, rouge_l, token_f1
from retrieval.filters import FilterError, combined, compile_filter

EVAL_QUESTIONS = "eval-questions.jsonl"   # in the collection's folder: `kbqa eval --remember` puts it there
SEARCH_DEPTH = 20   # chunks searched per question; their documents, deduplicated, are the ranking


@dataclass
class EvalQuestion:
    question: str
    answer: str | None = None
    gold_ids: list[str] = field(default_factory=list)
    answerable: bool = True
    filter: dict | None = None   # this question's own slice (one product's question), AND-ed with the run's


def _check(row: dict) -> str | None:
    if not isinstance(row["question"], str) or not row["question"].strip():
        return "needs a non-empty string 'question'"
    if not isinstance(row.get("gold_ids") or [], list):
        return "'gold_ids' must be a list of document ids"
    if row.get("filter") is not None:
        try:
            compile_filter(row["filter"])
        except FilterError as exc:
            return str(exc)
    return None


def read_questions(path: Path) -> list[EvalQuestion]:
    """The eval file's questions; ValueError naming the file and line of the first bad one."""
    rows = read_jsonl(path, {"question"}, _check)
    if not rows:
        raise ValueError(f"{path}: no questions")
    return [EvalQuestion(r["question"].strip(), r["answer"] if isinstance(r.get("answer"), str) else None,
                         [str(g) for g in r.get("gold_ids") or []], bool(r.get("answerable", True)),
                         r.get("filter") or None) for r in rows]


def _mean(values: list[float]) -> dict | None:
    return {"value": round(float(np.mean(values)), 4), "n": len(values)} if values else None


def evaluate(service, questions: list[EvalQuestion], collection: str = "default", ask: bool = False,
             progress=None, filter: dict | None = None) -> dict:
    """{metric: {"value", "n"}} for what the questions allow; ``progress`` wraps the question iterator (tqdm);
    ``filter``: a metadata filter every search and answer keeps to (one product's questions on its slice)."""
    figures: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        figures.setdefault(name, []).append(float(value))

    run_filter = filter
    for q in (progress(questions) if progress else questions):
        filter = combined(run_filter, q.filter)
        if q.gold_ids and q.answerable:
            start = time.perf_counter()
            hits = service.search(q.question, SEARCH_DEPTH, collection, filter)
            add("search seconds", time.perf_counter() - start)
            ranking = list(dict.fromkeys(h.chunk.doc_id for h in hits))
            for name, value in ranking_metrics(ranking, set(q.gold_ids)).items():
                add(name, value)
        if not ask:
            continue
        start = time.perf_counter()
        answer = service.ask(q.question, 5, collection, filter=filter)
        add("answer seconds", time.perf_counter() - start)
        add("hand-off recommended", answer.handoff.recommended)
        if not q.answerable:
            add("abstention recall (unanswerable)", answer.abstained)
            continue
        add("false abstention (answerable)", answer.abstained)
        if q.answer:
            text = "" if answer.abstained else answer.answer
            add("token-F1", token_f1(text, q.answer))
            add("ROUGE-L", rouge_l(text, q.answer))
        if q.gold_ids and not answer.abstained:
            for citation in answer.citations:
                add("citation precision", citation.doc_id in q.gold_ids)
    report = {name: _mean(values) for name, values in figures.items()}
    for name in ("search seconds", "answer seconds"):
        if name in figures:
            report[name] = {"p50": round(float(np.percentile(figures[name], 50)), 4),
                            "p95": round(float(np.percentile(figures[name], 95)), 4), "n": len(figures[name])}
    return {"collection": collection, "questions": len(questions), "ask": ask, "metrics": report}


ORDER = ("hit@1", "hit@5", "nDCG@10", "MRR@10", "token-F1", "ROUGE-L", "citation precision",
         "abstention recall (unanswerable)", "false abstention (answerable)", "hand-off recommended",
         "search seconds", "answer seconds")


def format_table(report: dict, before: dict | None = None) -> str:
    """A terminal table; with ``before``, its figures beside (a before/after comparison)."""
    header = "| metric | before | after | n |" if before else "| metric | value | n |"
    lines = [f"collection {report['collection']}: {report['questions']} questions", "", header,
             "|---|---|---|---|" if before else "|---|---|---|"]

    def show(figure: dict | None) -> str:
        if figure is None:
            return "-"
        if "p50" in figure:
            return f"p50 {figure['p50']:.3f} s, p95 {figure['p95']:.3f} s"
        return f"{figure['value']:.3f}"

    for name in ORDER:
        figure = report["metrics"].get(name)
        if figure is None and not (before and before["metrics"].get(name)):
            continue
        n = (figure or before["metrics"][name])["n"]
        cells = [show(before["metrics"].get(name)), show(figure)] if before else [show(figure)]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {n} |")
    return "\n".join(lines)
