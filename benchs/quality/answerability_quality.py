"""Can the answerability scorer tell prompts that hold the answer from prompts that do not?

    python -m benchs.quality.answerability_quality --data PATH/TO/shared/data --scorer .kbqa/models/answerability/vNNNN

Each question is retrieved for as served (hybrid search, relevance gate, the prompt's 3 passages); the
question's score is the best passage's p(holds the answer). The threshold is chosen on tune-split questions
the scorer never trained on (its validation slice): the highest one that abstains on at most
--max-false-abstain of answerable questions whose gold document is in the prompt. It is then reported on
the whole report split, beside the retrieval cosine used the same way (the relevance gate) and a lexical signal:
the share of the question's content words found in the prompt (retrieval/answering/grounding.content_words), alone and added to
the scorer. Pooled AUCs flatter question-shape signals (E-Manual and COVID questions are short, TechQA's are long
forum posts), so the AUC within TechQA, the only set with unanswerable questions, is reported too.
Issue 4's target: recall >= 0.8 on TechQA's unanswerable questions, <= 10% abstentions with gold in the prompt.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import (ANSWER_DATASETS, BENCH_HOME, MAX_QUESTION_WORDS, dataset_files, load_questions,
                           open_collection, publish, split_of)
from distill.answerability_train import AnswerabilityTrainConfig, read_pairs, split_by_question
from distill.metrics import auc
from retrieval.models import model_path
from retrieval.answering.gates import RelevanceGate
from retrieval.answering.verification import passages_of
from retrieval.answering.answerability import AnswerabilityScorer
from retrieval.answering.grounding import content_words
from serve.service import KbqaService
from serve.settings import Settings


def question_rows(service, data: Path, scorer, gate: RelevanceGate, split: str, keep) -> list[dict]:
    rows = []
    for name in ANSWER_DATASETS:
        collection = open_collection(service, data, name)
        for q in load_questions(dataset_files(data, name)[1]):
            question = " ".join(q["question"].split()[:MAX_QUESTION_WORDS])
            if split_of(q["id"]) != split or not keep(question):
                continue
            used = gate.run(collection.search(question, 5))
            passages = passages_of(used)
            gold = set(q.get("gold_ids") or [])
            asked = content_words(question)
            found = content_words(" ".join(p.title + " " + p.text for p in passages))
            row = {"dataset": name, "answerable": bool(q.get("answerable", True) and gold),
                   "gold_in_prompt": any(h.chunk.doc_id in gold for h in used),
                   "scorer": max(scorer.scores(question, passages), default=0.0),
                   "cosine": max((h.dense_score for h in used), default=-1.0),
                   "coverage": len(asked & found) / len(asked) if asked else 1.0}
            row["scorer + coverage"] = row["scorer"] + row["coverage"]
            rows.append(row)
    return rows


def rates(rows: list[dict], key: str, threshold: float) -> dict[str, float]:
    def share(subset):
        return sum(r[key] < threshold for r in subset) / len(subset) if subset else 0.0
    gold = [r for r in rows if r["answerable"] and r["gold_in_prompt"]]
    unanswerable = [r for r in rows if not r["answerable"]]
    techqa = [r for r in rows if r["dataset"] == "techqa_dev"]
    abstained = [r for r in techqa if r[key] < threshold]
    out = {"abstains, gold in prompt": share(gold)}
    for name in ANSWER_DATASETS:
        out[f"… {name}"] = share([r for r in gold if r["dataset"] == name])
    out["abstains, answerable (all)"] = share([r for r in rows if r["answerable"]])
    out["recall (TechQA unanswerable)"] = share(unanswerable)
    out["precision (TechQA)"] = (sum(not r["answerable"] for r in abstained) / len(abstained)) if abstained else 0.0
    return out


def choose(rows: list[dict], key: str, max_false: float) -> float:
    grid = sorted({r[key] for r in rows})
    ok = [t for t in grid if rates(rows, key, t)["abstains, gold in prompt"] <= max_false]
    return max(ok, default=grid[0])


def separation(rows: list[dict], key: str, dataset: str | None = None) -> float:
    """AUC of answerable-with-gold-in-prompt (positive) against TechQA unanswerable, optionally within one dataset."""
    chosen = [r for r in rows if ((r["answerable"] and r["gold_in_prompt"]) or not r["answerable"])
              and dataset in (None, r["dataset"])]
    return auc([r[key] for r in chosen], [int(r["answerable"]) for r in chosen])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--scorer", type=Path, required=True, help="a folder written by `kbqa train-answerability`")
    parser.add_argument("--max-false-abstain", type=float, default=0.08)
    parser.add_argument("--out", type=Path, default=Path("benchs/results/answerability_quality.md"))
    args = parser.parse_args()
    from distill.answerability_train import SHIPPED_PAIRS

    settings = Settings(home=BENCH_HOME)
    service = KbqaService.load(settings, with_generator=False)
    folder = args.scorer
    scorer = AnswerabilityScorer.load(folder, model_path(settings.kbqa_home.models_dir, "student-minilm"))
    config = AnswerabilityTrainConfig()
    _, held = split_by_question(read_pairs(SHIPPED_PAIRS), config.validation_share, config.seed)
    held_questions = {p["question"] for p in held}
    gate = RelevanceGate(settings.min_relevance, settings.prompt_passages)
    tune = question_rows(service, args.data, scorer, gate, "tune", held_questions.__contains__)
    report = question_rows(service, args.data, scorer, gate, "report", lambda q: True)

    lines = [f"Answerability scorer `{folder.name}`. Tune: the {len(tune)} tune-split questions it never trained on "
             f"({sum(not r['answerable'] for r in tune)} TechQA unanswerable); report: all {len(report)} report-split "
             f"questions ({sum(not r['answerable'] for r in report)} TechQA unanswerable). Threshold: highest with "
             f"<= {args.max_false_abstain:.0%} abstentions on tune answerable questions with gold in the prompt.", "",
             "| score | threshold | split | AUC (gold in prompt vs unanswerable) | AUC within TechQA | " +
             " | ".join(rates(report, "scorer", 0.5)) + " |", "|---" * (5 + len(rates(report, "scorer", 0.5))) + "|"]
    for key, label in (("scorer", "answerability scorer"), ("cosine", "retrieval cosine"),
                       ("coverage", "question words in the prompt"), ("scorer + coverage", "scorer + question words")):
        threshold = choose(tune, key, args.max_false_abstain)
        for split, rows in (("tune", tune), ("report", report)):
            cells = " | ".join(f"{v:.3f}" for v in rates(rows, key, threshold).values())
            lines.append(f"| {label} | {threshold:.3f} | {split} | {separation(rows, key):.3f} | "
                         f"{separation(rows, key, 'techqa_dev'):.3f} | {cells} |")
    lines += ["", "Report split, scorer threshold sweep:", "",
              "| threshold | " + " | ".join(rates(report, "scorer", 0.5)) + " |",
              "|---" * (1 + len(rates(report, "scorer", 0.5))) + "|"]
    for threshold in (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7):
        lines.append(f"| {threshold} | " + " | ".join(f"{v:.3f}" for v in rates(report, "scorer", threshold).values()) + " |")
    publish(lines, args.out)


if __name__ == "__main__":
    main()
