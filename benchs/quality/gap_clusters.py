"""Content-gap report (serve/gaps.py) on the dev sets' knowledge-gap protocol.

    python -m benchs.quality.gap_clusters --data PATH/TO/shared/data [--split report] [--thresholds 0.5,0.6,0.7]

Per set: a collection holding the knowledge base minus the gold documents of every 4th question (benchs/
common.py:gap_protocol). Every question of the split is asked through the service as served (select mode, gap
detector; answers logged as customers' would be), and rated the way a customer might: unhelpful when the answer
shares under 20% of its words with the reference (token-F1 < 0.2). Then:
- logged: share of gap questions (their documents removed) that reach the report (abstained or rated unhelpful);
- clustering, over the logged gap questions against the removed document each needs: pairwise precision/recall/F1
  of "same cluster" vs "same document", and clusters per removed document (1 is ideal);
- the top 10 clusters: share of their questions that are gap questions (the rest: noise for the docs team);
- re-ingest the removed documents, report again: share of gap-dominated clusters now covered, beside the share of
  the other clusters (the control: nothing was added for them).
The threshold is chosen on the tune split (pairwise F1, mean over sets) and reported on the report split.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from collections import Counter, defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import ANSWER_DATASETS, BENCH_HOME, dataset_files, gap_protocol, load_questions, publish, split_of
from distill.metrics import token_f1
from retrieval.answering.engines.cpu import describe
from serve.gaps import gap_report
from serve.service import KbqaService
from serve.settings import Settings

UNHELPFUL_BELOW = 0.2


def fresh_home(name: str, split: str) -> Path:
    home = BENCH_HOME / "gaps" / f"{name}-{split}"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    (home / "models").symlink_to((BENCH_HOME / "models").resolve())
    return home


def pairwise(clusters: list[list[str]]) -> dict[str, float]:
    """Pairwise precision/recall/F1 of co-clustering against the gold label of each member (label strings)."""
    same_cluster = {(a, b) for members in clusters for a, b in combinations(sorted(members), 2)}
    members = sorted(m for c in clusters for m in c)
    label = {m: m.split("|", 1)[0] for m in members}
    same_label = {(a, b) for a, b in combinations(members, 2) if label[a] == label[b]}
    tp = len(same_cluster & same_label)
    precision = tp / len(same_cluster) if same_cluster else 1.0
    recall = tp / len(same_label) if same_label else 1.0
    return {"precision": precision, "recall": recall,
            "F1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}


def run_set(data: Path, name: str, split: str, thresholds: list[float]) -> dict:
    kb_path, questions_path = dataset_files(data, name)
    questions = load_questions(questions_path)
    removed, status = gap_protocol(questions)
    kb_rows = [json.loads(line) for line in kb_path.read_text().splitlines() if line.strip()]
    home = fresh_home(name, split)
    source = home / "source"
    source.mkdir()
    (source / "kb.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kb_rows if r["id"] not in removed))
    service = KbqaService.load(Settings(home=home))
    service.ingest(source, "kb")
    asked = [q for q in questions if split_of(q["id"]) == split and (status.get(q["id"]) in ("gap", "answerable")
                                                                       or not q.get("answerable", True))]
    need: dict[str, str] = {}   # logged question text -> the removed document it needs
    gap_total = 0
    for q in asked:
        answer = service.ask(q["question"], 5, "kb")
        if not answer.abstained and q.get("answer") and token_f1(answer.answer, q["answer"]) < UNHELPFUL_BELOW:
            service.feedback.add_feedback(answer.answer_id, helpful=False)
        if status.get(q["id"]) == "gap":
            gap_total += 1
            need[q["question"].strip().lower()] = sorted(set(q["gold_ids"]) & removed)[0]
    result = {"asked": len(asked), "gap questions": gap_total, "by threshold": {}}
    for threshold in thresholds:
        report = gap_report(service, "kb", since_days=3650, threshold=threshold, check_coverage=False,
                            include_all=True)
        clusters = report["clusters"]
        # Members are logged questions; label the gap ones with the document they need.
        texts_of = [[e.strip().lower() for e in c["all_questions"]] for c in clusters]
        gap_clusters = [[f"{need[t]}|{t}" for t in texts if t in need] for texts in texts_of]
        gap_clusters = [c for c in gap_clusters if c]
        logged_gap = sum(len(c) for c in gap_clusters)
        docs = Counter(m.split("|", 1)[0] for c in gap_clusters for m in c)
        per_doc = defaultdict(set)
        for n, c in enumerate(gap_clusters):
            for m in c:
                per_doc[m.split("|", 1)[0]].add(n)
        top = texts_of[:10]
        result["by threshold"][threshold] = {
            "clusters": len(clusters), "logged gap": logged_gap / max(1, gap_total),
            **pairwise(gap_clusters),
            "clusters per removed doc": float(np.mean([len(v) for d, v in per_doc.items() if docs[d] >= 2]))
            if any(docs[d] >= 2 for d in docs) else float("nan"),
            "top-10 gap share": sum(t in need for c in top for t in c) / max(1, sum(len(c) for c in top))}
    result["service"], result["source"], result["removed"], result["kb_rows"] = service, source, removed, kb_rows
    result["need"] = need
    return result


def coverage_after_reingest(result: dict, threshold: float) -> dict:
    """Ingest the removed documents; the share of gap-dominated clusters covered now vs the other clusters."""
    service, need = result["service"], result["need"]
    (result["source"] / "restored.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in result["kb_rows"] if r["id"] in result["removed"]))
    service.ingest(result["source"], "kb")
    report = gap_report(service, "kb", since_days=3650, threshold=threshold, include_all=True)
    gap_side, other = [], []
    for cluster in report["clusters"]:
        texts = [t.strip().lower() for t in cluster["all_questions"]]
        (gap_side if sum(t in need for t in texts) * 2 > len(texts) else other).append(float(cluster["covered"]))
    return {"gap clusters covered": float(np.mean(gap_side)) if gap_side else float("nan"), "gap clusters": len(gap_side),
            "other clusters covered": float(np.mean(other)) if other else float("nan"), "other clusters": len(other)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="report", choices=("tune", "report"))
    parser.add_argument("--thresholds", default="0.5,0.6,0.7")
    parser.add_argument("--threshold", type=float, help="the one to report coverage at (default: best mean F1)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    thresholds = [float(t) for t in args.thresholds.split(",")]
    results = {name: run_set(args.data, name, args.split, thresholds) for name in ANSWER_DATASETS}
    best = args.threshold or max(thresholds, key=lambda t: np.mean([r["by threshold"][t]["F1"] for r in results.values()]))
    lines = [f"Content-gap clusters, {args.split} split, one run. CPU: {describe()}.",
             "Log: every split question asked through the service (select mode, gap detector), rated unhelpful when "
             f"token-F1 to the reference < {UNHELPFUL_BELOW}. Pairwise figures over the logged gap questions, "
             "against the removed document each needs.", "",
             "| set | threshold | asked | gap questions | logged (share) | clusters | pairwise P | pairwise R | "
             "pairwise F1 | clusters per removed doc | top-10 gap share |", "|---" * 11 + "|"]
    for name, r in results.items():
        for t in thresholds:
            f = r["by threshold"][t]
            lines.append(f"| {name} | {t} | {r['asked']} | {r['gap questions']} | {f['logged gap']:.2f} | "
                         f"{f['clusters']} | {f['precision']:.2f} | {f['recall']:.2f} | {f['F1']:.2f} | "
                         f"{f['clusters per removed doc']:.2f} | {f['top-10 gap share']:.2f} |")
    lines += ["", f"After re-ingesting the removed documents (threshold {best}): share of clusters now covered "
              "(most of their central questions answered by the same gates as the API).", "",
              "| set | gap clusters | covered | other clusters | covered (control) |", "|---|---|---|---|---|"]
    for name, r in results.items():
        c = coverage_after_reingest(r, best)
        lines.append(f"| {name} | {c['gap clusters']} | {c['gap clusters covered']:.2f} | {c['other clusters']} | "
                     f"{c['other clusters covered']:.2f} |")
    publish(lines, args.out or Path(f"benchs/results/gap_clusters_{args.split}.md"))


if __name__ == "__main__":
    main()
