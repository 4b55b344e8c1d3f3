"""Issue 19's table: answers against the extractive baselines and the oracle, citation precision, abstention under the
knowledge-gap protocol, degenerate answers; one run, the same retrieval for every system, on a split never used
for training or thresholds.

    python -m benchs.quality.answer_trust --data PATH/TO/shared/data [--split report] [--per-dataset 60] [--no-old] [--llama]
                                  [--adapter DIR ...] [--loo DIR]

Systems, per answerable question (top hits of the full knowledge base, benchs/common.py):
- ``first 3 sentences``: the top chunk's first three sentences;
- ``best 2 sentences``: the two sentences of the top chunk that best match the question (the old fallback);
- ``110 words of top 3``: the first 110 words of the top three chunks;
- ``oracle``: greedy sentence choice from the top three chunks against the reference (a ceiling, never a method);
- ``old default``: the generator as served before issue 19 (shipped adapter, CTranslate2, support check);
- ``new default``: as served now (Settings defaults: sentence selection, gap detector);
- ``old default, adapter X`` (with --adapter X): the old default with another generator adapter (issue 17's
  feedback-trained one: benchs/quality/feedback_loop.py);
- ``new default, leave-one-out`` (with --loo DIR): as served, but each set answered by the sentence scorer, selector
  and gap detector fitted without it (distill/selector_loo.py): how a new customer's knowledge base is answered, the
  figure that counts (issue 27); ``leave-one-out, gap detector off``: the same without the gap detector;
- ``remote llama.cpp`` (with --llama): KBQA_GENERATOR_URL pointed at llama.cpp's server serving the bundled SmolLM2
  GGUF on this machine (retrieval/answering/engines/llama_server.py), everything else as served: the bring-your-own-generator path.
Gap protocol: the knowledge-gap questions on the gap knowledge base should be refused; the questions still
answerable there should not. TechQA's own unanswerable questions (full knowledge base) are reported beside.
The gap to close is the one between the best baseline and the oracle, per dataset.
"""
from __future__ import annotations

import argparse
import hashlib
import os
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import ANSWER_DATASETS, BENCH_HOME, Served, loo_parts, publish, retrieval_rows, sample
from distill.metrics import oracle_selection, rouge_l, token_f1
from retrieval.answering.engines.cpu import describe
from retrieval.answering.degeneration import degenerate_reason
from retrieval.answering.grounding import check_support, extract_answer
from retrieval.answering.selection import split_units
from serve.service import KbqaService
from serve.settings import Settings

BASELINES = ("first 3 sentences", "best 2 sentences", "110 words of top 3")
LOO = "new default, leave-one-out"
LOO_NO_GAP = "leave-one-out, gap detector off"


def procedures_whole(answer: str, passages: list[dict]) -> list[float]:
    """One value per procedure of a cited passage the answer draws on (quotes a unit of): 1.0 when it quotes
    every unit of it. Procedures: lists and colon-introduced steps, as retrieval/answering/selection.py cuts them."""
    values = []
    for hit in passages:
        units = split_units(hit["text"], 0, hit.get("context", ""))
        for key in ("block", "procedure"):
            for group in {getattr(u, key) for u in units} - {None}:
                members = [u.text for u in units if getattr(u, key) == group]
                quoted = [text in answer for text in members]
                if len(members) > 1 and any(quoted):
                    values.append(float(all(quoted)))
    return values


def prompt_hits(row_hits: list[dict], settings: Settings) -> list[dict]:
    """The hits the pipeline numbers [1]..[k]: those passing the relevance gate, in retrieval order."""
    return [h for h in row_hits if (h["dense"] if h["dense"] is not None else -1.0) >= settings.min_relevance][
        :settings.prompt_passages]


def baseline(name: str, row: dict) -> tuple[str, list[int]]:
    top = row["hits"][:3]
    if name == "first 3 sentences":
        return " ".join(u.text for u in split_units(top[0]["text"])[:3]), [1]
    if name == "best 2 sentences":
        return extract_answer(row["question"], top[0]["text"]), [1]
    if name == "110 words of top 3":
        return " ".join(" ".join(h["text"] for h in top).split()[:110]), list(range(1, len(top) + 1))
    units = [u for n, h in enumerate(top) for u in split_units(h["text"], n)]
    chosen = [units[i] for i in oracle_selection([u.text for u in units], row["reference"])]
    return " ".join(u.text for u in chosen), sorted({u.passage + 1 for u in chosen})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="report", choices=("tune", "report"))
    parser.add_argument("--per-dataset", type=int, default=60, help="answerable questions per set (0: all)")
    parser.add_argument("--gap-per-dataset", type=int, default=40, help="gap-protocol questions of each kind per set")
    parser.add_argument("--no-old", action="store_true", help="skip the old default (it generates: slow)")
    parser.add_argument("--llama", action="store_true",
                        help="add the remote generator: llama.cpp's server with the bundled SmolLM2 GGUF")
    parser.add_argument("--adapter", type=Path, action="append", default=[],
                        help="add the old default with this generator adapter instead of the shipped one (repeatable; "
                             "e.g. the one benchs/quality/feedback_loop.py trains)")
    parser.add_argument("--loo", type=Path, metavar="DIR",
                        help="add the default leave-one-dataset-out: each set answered by the scorer, selector and gap "
                             "detector in DIR/<set>/ (python -m distill.selector_loo), fitted without that set")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with ExitStack() as stack:
        run(args, stack)


def run(args, stack: ExitStack) -> None:
    settings = Settings(home=BENCH_HOME)
    service = KbqaService.load(settings)                      # the new default, as served
    systems = {"new default": Served(service.pipeline)}
    if not args.no_old:
        old = KbqaService.load(Settings(home=BENCH_HOME, answer_mode="generate", sentence_scorer="none",
                                        gap_detection=False))
        cache = BENCH_HOME / "answers" / f"old-default-{old.pipeline.writer.generator.name.replace(' ', '_')}-{args.split}.jsonl"
        cache.parent.mkdir(parents=True, exist_ok=True)
        systems["old default"] = Served(old.pipeline, cache)
    for adapter in args.adapter:   # the old default's settings, another adapter: the adapters compared alone
        other = KbqaService.load(Settings(home=BENCH_HOME, answer_mode="generate", sentence_scorer="none",
                                          gap_detection=False, generator_adapter=str(adapter)))
        label = f"old default, adapter {adapter}"
        trained = adapter / "training.json"   # a retrained adapter at the same path gets a new cache
        digest = hashlib.sha256((str(adapter.resolve()) + (trained.read_text() if trained.exists() else ""))
                                .encode()).hexdigest()[:10]
        cache = BENCH_HOME / "answers" / f"adapter-{digest}-{args.split}.jsonl"
        systems[label] = Served(other.pipeline, cache)
    if args.llama:   # not cached: its answer times are part of the figure
        from retrieval.answering.engines.llama_server import ALIAS, llama_served

        url = stack.enter_context(llama_served())
        remote = KbqaService.load(Settings(home=BENCH_HOME, generator_url=url, generator_model=ALIAS,
                                           generator_fallback="error"))
        systems["remote llama.cpp"] = Served(remote.pipeline)

    loo = {}
    if args.loo:   # a pipeline per set, below
        from serve.wiring import answer_pipeline

        for name in ANSWER_DATASETS:
            parts = loo_parts(settings, args.loo / name)
            loo[(LOO_NO_GAP, name)] = Served(answer_pipeline(settings, **{**parts, "gap_detector": None}))
            loo[(LOO, name)] = Served(answer_pipeline(settings, **parts))
        systems[LOO_NO_GAP] = systems[LOO] = None
    table, per_set = defaultdict(lambda: defaultdict(list)), defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for name in ANSWER_DATASETS:
        rows = retrieval_rows(service, args.data, name, args.split)
        answerable = sample(rows, lambda r: r["answerable"], args.per_dataset)
        gaps = sample(rows, lambda r: r["gap_status"] == "gap", args.gap_per_dataset)
        still = sample(rows, lambda r: r["gap_status"] == "answerable", args.gap_per_dataset)
        unanswerable = [r for r in rows if not r["answerable"]]
        set_systems = {s: loo[(s, name)] if served is None else served for s, served in systems.items()}
        for row in answerable:
            gold = set(row["gold_ids"])
            outputs = {b: baseline(b, row) for b in BASELINES + ("oracle",)}
            for system, served in set_systems.items():
                result = served(row["id"], row["question"], row["hits"])
                outputs[system] = ("" if result["abstained"] else result["answer"], result["cited"])
                prompt = prompt_hits(row["hits"], settings)   # what [n] numbers: the gated passages
                texts = [prompt[n - 1]["title"] + " " + prompt[n - 1]["text"] for n in result["cited"]]
                # Quoted text is the docs' own: the loop check is for what a generator wrote.
                bad = not result["abstained"] and (
                    (result["grounding"] == "generated"
                     and degenerate_reason(result["answer"], [h["title"] for h in prompt]) is not None)
                    or any(not v.supported for v in check_support(result["answer"], texts, settings.support_threshold)))
                table[system]["degenerate or unsupported"].append(float(bad))
                if result["fallback_reason"] not in (None, "unsupported", "no citation"):
                    table[system]["degenerate generations caught"].append(1.0)
                table[system]["false abstention (full KB)"].append(float(result["abstained"]))
                table[system]["served as generated"].append(float(result["grounding"] == "generated"))
                per_set[name][system]["false abstention (full KB)"].append(float(result["abstained"]))
            per_set[name]["retrieval"]["gold@1"].append(float(bool(row["hits"]) and row["hits"][0]["doc_id"] in gold))
            per_set[name]["reference"]["words"].append(len(row["reference"].split()))
            for system, (text, cited) in outputs.items():
                f1, rl = token_f1(text, row["reference"]), rouge_l(text, row["reference"])
                # Baselines number the top hits; served systems number the passages that passed the gate.
                numbered = row["hits"][:3] if system in BASELINES + ("oracle",) else prompt_hits(row["hits"], settings)
                for target in (table[system], per_set[name][system]):
                    target["token-F1"].append(f1)
                    target["ROUGE-L"].append(rl)
                    if text:
                        target["citation precision"] += [float(numbered[n - 1]["doc_id"] in gold) for n in cited]
                        target["procedures whole"] += procedures_whole(text, [numbered[n - 1] for n in cited])
                        target["answer words"].append(len(text.split()))
        for system, served in set_systems.items():
            for row in gaps:
                refused = float(served(row["id"] + ":gap", row["question"], row["gap_hits"])["abstained"])
                table[system]["gap recall"].append(refused)
                per_set[name][system]["gap recall"].append(refused)
            for row in still:
                refused = float(served(row["id"] + ":gapkb", row["question"], row["gap_hits"])["abstained"])
                table[system]["gap false abstention"].append(refused)
                per_set[name][system]["gap false abstention"].append(refused)
            for row in unanswerable:
                table[system]["TechQA unanswerable recall"].append(
                    float(served(row["id"], row["question"], row["hits"])["abstained"]))
        print(f"{name}: done", flush=True)

    order = list(BASELINES) + ["oracle"] + list(systems)[::-1]
    columns = ["token-F1", "gap closed", "ROUGE-L", "citation precision", "gap recall", "gap false abstention",
               "false abstention (full KB)", "TechQA unanswerable recall", "degenerate or unsupported",
               "served as generated", "procedures whole", "answer words (median)"]
    best_base = {name: max(np.mean(per_set[name][b]["token-F1"]) for b in BASELINES) for name in ANSWER_DATASETS}
    oracle = {name: np.mean(per_set[name]["oracle"]["token-F1"]) for name in ANSWER_DATASETS}

    def closed(system: str, names=ANSWER_DATASETS) -> float:
        return float(np.mean([(np.mean(per_set[n][system]["token-F1"]) - best_base[n]) / (oracle[n] - best_base[n])
                              for n in names]))

    def cell(values: list[float], column: str = "") -> str:
        if not values:
            return "-"
        return f"{np.median(values):.0f}" if column.endswith("(median)") else f"{np.mean(values):.3f}"

    seconds = {s: v.seconds for s, v in systems.items() if v is not None}
    for (system, _), served in loo.items():
        seconds.setdefault(system, []).extend(served.seconds)
    timing = {s: np.array(t) for s, t in seconds.items() if t}
    lines = [f"Answer trust, {args.split} split, one run. CPU: {describe()}.",
             f"Answerable questions: {args.per_dataset or 'all'} per set; gap protocol: up to {args.gap_per_dataset} "
             "gap and still-answerable questions per set; all TechQA unanswerable questions of the split. "
             "token-F1 and ROUGE-L count an abstention as 0. 'gap closed': share of the best-baseline-to-oracle "
             "token-F1 gap closed, mean over sets.", "",
             "| system | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for system in order:
        values = dict(table[system])
        row = [cell(values.get("token-F1", [])), f"{closed(system):+.2f}" if system not in BASELINES else "-"]
        row += [cell(values.get(c.replace(" (median)", ""), []), c) for c in columns[2:]]
        lines.append(f"| {system} | " + " | ".join(row) + " |")
    lines += ["", "Per set (token-F1 / gap closed / citation precision / gap recall / gap false abstention); gold@1: "
              "retrieval's rank-1 passage is a gold one; reference words: the reference answers' median length:", "",
              "| set | best baseline | oracle | gold@1 | reference words | " + " | ".join(list(systems)[::-1]) + " |",
              "|---" * (5 + len(systems)) + "|"]
    for name in ANSWER_DATASETS:
        cells = []
        for system in list(systems)[::-1]:
            v = per_set[name][system]
            cells.append(f"{np.mean(v['token-F1']):.3f} / {closed(system, [name]):+.2f} / "
                         f"{cell(v['citation precision'])} / {cell(v['gap recall'])} / {cell(v['gap false abstention'])}")
        lines.append(f"| {name} | {best_base[name]:.3f} | {oracle[name]:.3f} | "
                     f"{cell(per_set[name]['retrieval']['gold@1'])} | "
                     f"{np.median(per_set[name]['reference']['words']):.0f} | " + " | ".join(cells) + " |")
    if timing:
        lines += ["", "Answer time per question after retrieval (this run, seconds): "
                  + "; ".join(f"{s}: p50 {np.percentile(t, 50):.2f}, p95 {np.percentile(t, 95):.2f} (n={len(t)})"
                              for s, t in timing.items())]
    publish(lines, args.out or Path(f"benchs/results/answer_trust_{args.split}.md"))


if __name__ == "__main__":
    main()
