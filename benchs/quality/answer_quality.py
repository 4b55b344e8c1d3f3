"""Answer quality on real questions: extractive baseline vs the generator (base or fine-tuned), with and without
the support check.

    python -m benchs.quality.answer_quality --data PATH/TO/shared/data [--split report] [--per-dataset 40]
                                    [--adapter PATH] [--label NAME] [--scorer auto|none|PATH]

For each dataset (emanualqa, covid_faq_deepset, techqa_dev) a fixed sample of answerable questions of the
split, plus every TechQA unanswerable question of the split, goes through the product's path: hybrid
retrieval in the dataset's collection, the relevance gate, three passages, the generator. Generations are
cached in .kbqa-bench/answers/ so the support-check sweep costs nothing. Reported per system:
token-F1 and ROUGE-L against the reference answer (answerable questions; an abstention scores 0),
citation precision (cited passage from a gold document), abstention precision/recall on TechQA's
unanswerable questions, abstention on answerable questions whose gold passage was in the prompt,
and the share of answers with a sentence the support check rejects. With an answerability scorer
(retrieval/answering/answerability.py: --scorer FOLDER, or auto = the current one if any), the served path is one more system:
abstain when no prompt passage reaches the scorer's threshold, else generator + support check.
"""
from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from distill.metrics import rouge_l, token_f1
from benchs.common import ANSWER_DATASETS, BENCH_HOME, dataset_files, load_questions, open_collection, publish, split_of
from retrieval.models import GENERATOR_BASE, STUDENT_START, model_path
from retrieval.answering.gates import RelevanceGate
from retrieval.answering.verification import Verifier, passages_of
from retrieval.answering.prompt import ABSTENTION, build_messages
from retrieval.answering.engines.local import Generator
from retrieval.answering.engines.ct2 import Ct2Generator, converted_dir
from retrieval.answering.engines.loading import BACKENDS, load_generator
from retrieval.answering.grounding import check_support, extract_answer
from retrieval.answering.registry import resolve_scorer
from serve.service import KbqaService
from serve.settings import Settings



def sample_questions(data: Path, name: str, split: str, per_dataset: int) -> list[dict]:
    questions = [q for q in load_questions(dataset_files(data, name)[1]) if split_of(q["id"]) == split]
    answerable = [q for q in questions if q.get("answerable", True) and q.get("gold_ids")]
    unanswerable = [q for q in questions if not (q.get("answerable", True) and q.get("gold_ids"))]
    return random.Random(0).sample(answerable, min(per_dataset, len(answerable))) + unanswerable


def generate_all(args, service: KbqaService, gate: RelevanceGate, generator: Generator | None, cache: Path) -> list[dict]:
    """One row per question: the prompt passages, and the generator's raw text (cached)."""
    done = {}
    if cache.exists():
        done = {r["id"]: r for r in map(json.loads, cache.read_text().splitlines())}
    rows = []
    with cache.open("a") as out:
        for name in ANSWER_DATASETS:
            collection = open_collection(service, args.data, name)
            for q in sample_questions(args.data, name, args.split, args.per_dataset):
                if q["id"] in done:
                    rows.append(done[q["id"]])
                    continue
                used = gate.run(collection.search(q["question"], 5))
                passages = passages_of(used)
                raw = generator.generate(build_messages(q["question"], passages))[0] if used and generator else None
                row = {"id": q["id"], "dataset": name, "question": q["question"], "reference": q.get("answer") or "",
                       "gold_ids": q.get("gold_ids") or [], "answerable": bool(q.get("answerable", True) and q.get("gold_ids")),
                       "passages": [{"doc_id": h.chunk.doc_id, "title": p.title, "text": p.text} for h, p in zip(used, passages)],
                       "raw": raw}
                out.write(json.dumps(row) + "\n")
                out.flush()
                rows.append(row)
                print(f"{len(rows)} {name} {q['id']}: {(raw or ABSTENTION)[:80]!r}", flush=True)
    return rows


def outcome(row: dict, system: str, threshold: float) -> tuple[str, list[int], bool]:
    """(answer text, cited passage numbers, abstained) of a system on a cached row."""
    if not row["passages"]:
        return ABSTENTION, [], True
    if system == "generator+check+answerability":
        if row["answerability"] < row["answerability_threshold"]:
            return ABSTENTION, [], True
        system = "generator+check"
    if system == "extractive":
        return extract_answer(row["question"], row["passages"][0]["text"]), [1], False
    from ingest.records import Chunk
    from retrieval.search import SearchHit

    used = [SearchHit(Chunk(p["doc_id"], p["doc_id"], p["title"], "", 0, p["text"]), 1.0, 1.0) for p in row["passages"]]
    policy = {"generator": "none", "generator+check": "extractive", "generator+check/abstain": "abstain"}[system]
    verifier = Verifier(threshold if policy != "none" else 0.0, policy if policy != "none" else "extractive")
    served = verifier.run(row["question"], row["raw"], used)
    return served.text, served.numbers, served.abstained


def score(rows: list[dict], system: str, threshold: float) -> dict[str, float]:
    f1, rl, cite_ok, cites, unsupported, answered = [], [], 0, 0, 0, 0
    abst_unans, abst_total, unans = 0, 0, 0
    abst_gold_in_prompt, gold_in_prompt = 0, 0
    for row in rows:
        text, numbers, abstained = outcome(row, system, threshold)
        gold = set(row["gold_ids"])
        if row["answerable"]:
            f1.append(0.0 if abstained else token_f1(text, row["reference"]))
            rl.append(0.0 if abstained else rouge_l(text, row["reference"]))
            if any(p["doc_id"] in gold for p in row["passages"]):
                gold_in_prompt += 1
                abst_gold_in_prompt += abstained
        if row["dataset"] == "techqa_dev":
            unans += not row["answerable"]
            abst_total += abstained
            abst_unans += abstained and not row["answerable"]
        if not abstained:
            answered += 1
            cites += len(numbers)
            cite_ok += sum(row["passages"][n - 1]["doc_id"] in gold for n in numbers)
            texts = [row["passages"][n - 1]["title"] + " " + row["passages"][n - 1]["text"] for n in numbers]
            unsupported += any(not v.supported for v in check_support(text, texts, threshold))
    return {"token-F1": sum(f1) / len(f1), "ROUGE-L": sum(rl) / len(rl),
            "citation precision": cite_ok / cites if cites else 0.0,
            "abstention precision (TechQA)": abst_unans / abst_total if abst_total else 0.0,
            "abstention recall (TechQA)": abst_unans / unans if unans else 0.0,
            "abstains, gold in prompt": abst_gold_in_prompt / gold_in_prompt if gold_in_prompt else 0.0,
            "answers with an unsupported sentence": unsupported / answered if answered else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="report", choices=("tune", "report"))
    parser.add_argument("--per-dataset", type=int, default=40)
    parser.add_argument("--adapter", default="none", help="a fine-tuned LoRA adapter folder, or none (the base model)")
    parser.add_argument("--label", help="name of the generator in the table")
    parser.add_argument("--backend", default="transformers", choices=BACKENDS[1:],
                        help="the generator's engine (retrieval/answering/engines/loading.py)")
    parser.add_argument("--ct2-compute-type", default="int8", choices=("int8", "float32"),
                        help="with --backend ctranslate2: float32 separates quantization from the engine")
    parser.add_argument("--abstain-threshold", type=float, help="the generator's abstention gate (default: none)")
    parser.add_argument("--threshold", type=float, default=Settings().support_threshold)
    parser.add_argument("--scorer", default="auto", help="answerability scorer: auto (as served), none, or a folder")
    parser.add_argument("--answerability-threshold", type=float, default=Settings().answerability_threshold)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    adapter = None if args.adapter == "none" else Path(args.adapter)
    label = args.label or (adapter.name if adapter else "base") + (
        f"-ct2{'' if args.ct2_compute_type == 'int8' else '-fp32'}" if args.backend == "ctranslate2" else "")
    settings = Settings(home=BENCH_HOME)
    service = KbqaService.load(settings, with_generator=False)
    models_dir = settings.kbqa_home.models_dir
    base = model_path(models_dir, GENERATOR_BASE)
    if args.backend == "ctranslate2" and args.ct2_compute_type != "int8":
        generator = Ct2Generator(converted_dir(models_dir, base, adapter), max_new_tokens=settings.max_new_tokens,
                                 abstain_threshold=args.abstain_threshold, compute_type=args.ct2_compute_type)
    else:
        generator = load_generator(models_dir, base, args.backend, adapter_dir=adapter,
                                   max_new_tokens=settings.max_new_tokens, abstain_threshold=args.abstain_threshold)
    gate = RelevanceGate(settings.min_relevance, settings.prompt_passages)
    cache = BENCH_HOME / "answers" / f"{label}-{args.split}-{args.per_dataset}.jsonl"
    cache.parent.mkdir(parents=True, exist_ok=True)
    rows = generate_all(args, service, gate, generator, cache)

    systems = ["extractive", "generator", "generator+check", "generator+check/abstain"]
    scorer_folder = resolve_scorer(args.scorer, models_dir)
    if scorer_folder is not None:
        from retrieval.answering.answerability import AnswerabilityScorer
        from retrieval.answering.records import Passage

        scorer = AnswerabilityScorer.load(scorer_folder, model_path(models_dir, STUDENT_START))
        for row in rows:   # scored fresh, not cached: the scorer changes independently of the generations
            row["answerability"] = max(scorer.scores(row["question"], [Passage(p["title"], p["text"])
                                                                       for p in row["passages"]]), default=0.0)
            row["answerability_threshold"] = args.answerability_threshold
        systems.append("generator+check+answerability")
    results = {s: score(rows, s, args.threshold) for s in systems}
    columns = list(results["extractive"])
    n_answerable = sum(r["answerable"] for r in rows)
    lines = [f"Generator `{label}`, {args.split} split: {n_answerable} answerable questions "
             f"({args.per_dataset} per dataset) + {len(rows) - n_answerable} TechQA unanswerable; "
             f"support threshold {args.threshold}"
             + (f"; answerability scorer `{scorer_folder.name}` at {args.answerability_threshold}"
                if scorer_folder else "") + ".", "",
             "| system | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for system in systems:
        name = system.replace("generator", label)
        lines.append(f"| {name} | " + " | ".join(f"{results[system][c]:.3f}" for c in columns) + " |")
    lines += ["", "Support-threshold sweep (generator+check):", "",
              "| threshold | token-F1 | ROUGE-L | citation precision | answers with an unsupported sentence (of the raw generator) |",
              "|---|---|---|---|---|"]
    for threshold in (0.4, 0.5, 0.6, 0.7, 0.8):
        checked, raw = score(rows, "generator+check", threshold), score(rows, "generator", threshold)
        lines.append(f"| {threshold} | {checked['token-F1']:.3f} | {checked['ROUGE-L']:.3f} | "
                     f"{checked['citation precision']:.3f} | {raw['answers with an unsupported sentence']:.3f} |")
    if scorer_folder is not None:
        lines += ["", "Answerability-threshold sweep (generator+check+answerability):", "",
                  "| threshold | token-F1 | ROUGE-L | abstention precision (TechQA) | abstention recall (TechQA) | "
                  "abstains, gold in prompt |", "|---|---|---|---|---|---|"]
        for cut in (0.25, 0.3, 0.355, 0.4, 0.5):
            for row in rows:
                row["answerability_threshold"] = cut
            r = score(rows, "generator+check+answerability", args.threshold)
            lines.append(f"| {cut} | {r['token-F1']:.3f} | {r['ROUGE-L']:.3f} | {r['abstention precision (TechQA)']:.3f} | "
                         f"{r['abstention recall (TechQA)']:.3f} | {r['abstains, gold in prompt']:.3f} |")
        for row in rows:
            row["answerability_threshold"] = args.answerability_threshold
    per_dataset = []
    for name in ANSWER_DATASETS:
        subset = [r for r in rows if r["dataset"] == name]
        cells = [f"{score(subset, s, args.threshold)['token-F1']:.3f}" for s in systems]
        per_dataset.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "token-F1 per dataset:", "", "| dataset | " + " | ".join(s.replace("generator", label) for s in systems) + " |",
              "|---" * (len(systems) + 1) + "|"] + per_dataset
    out = args.out or Path(f"benchs/results/answer_quality_{label}_{args.split}.md")
    publish(lines, out)


if __name__ == "__main__":
    main()
