"""Generator speed on this CPU: first-token latency and decode rate per engine, after checking what each answers.

    python -m benchs.speed.generator_speed [--home .kbqa] [--collection default] [--runs 3]

Needs `make run` (or `kbqa ingest kb/docs`) done first. Prompts are the product's own: a kb/ question, its top
5 passages from the collection (hybrid retrieval), the serving prompt. The timing prompt is the first one of at
least --min-prompt-tokens tokens (the issue's ~850-token, 5-passage case).

Correctness first: every engine answers the same 12 prompts greedily (64 new tokens at most), and is compared
with fp32 transformers, the reference: how many answers are identical and the token-F1 to the reference answer.
Answer quality on real questions is benchs/quality/answer_quality.py --backend.

Timing, median of --runs after one warm-up: first token = a 1-token generation (prefill + one step);
decode = (64 - 1) / (time for 64 tokens - time for 1), with 64 new tokens forced.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from distill.metrics import token_f1
from benchs.common import ON_TOPIC, publish
from retrieval.models import GENERATOR_BASE, model_path
from retrieval.answering.verification import passages_of
from retrieval.answering.engines.base import REPETITION_PENALTY
from retrieval.answering.prompt import build_messages
from serve.service import KbqaService
from serve.settings import Settings


class Engine:
    """Both engines take the serving prompt through the same chat template."""

    def ids(self, messages):
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]


class TransformersEngine(Engine):
    def __init__(self, base: Path, dtype: str = "float32", compiled: bool = False):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(base)
        self.model = AutoModelForCausalLM.from_pretrained(base, dtype=getattr(torch, dtype)).eval()
        self.extra = {}
        if compiled:
            # Static KV cache: fixed shapes, so the compiled graph is reused token after token.
            self.extra["cache_implementation"] = "static"
            self.model.forward = torch.compile(self.model.forward, dynamic=False)

    def run(self, ids, new_tokens: int, forced: bool = False) -> list[int]:
        from transformers import RepetitionPenaltyLogitsProcessor

        inputs = self.torch.tensor([ids])
        penalty = [RepetitionPenaltyLogitsProcessor(REPETITION_PENALTY, len(ids))]  # as retrieval/answering/engines/local.py does
        with self.torch.inference_mode():
            out = self.model.generate(inputs, attention_mask=self.torch.ones_like(inputs), max_new_tokens=new_tokens,
                                      min_new_tokens=new_tokens if forced else 0, do_sample=False,
                                      logits_processor=penalty, pad_token_id=self.tokenizer.eos_token_id, **self.extra)
        return out[0, len(ids):].tolist()


class Ct2Engine(Engine):
    def __init__(self, models_dir: Path, base: Path, compute_type: str):
        import ctranslate2
        from transformers import AutoTokenizer

        from retrieval.answering.engines.ct2 import converted_dir

        folder = converted_dir(models_dir, base)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = ctranslate2.Generator(str(folder), device="cpu", compute_type=compute_type,
                                           intra_threads=os.cpu_count() or 1)

    def run(self, ids, new_tokens: int, forced: bool = False) -> list[int]:
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        result = self.model.generate_batch([tokens], max_length=new_tokens, min_length=new_tokens if forced else 0,
                                           sampling_topk=1, repetition_penalty=REPETITION_PENALTY, include_prompt_in_result=False)
        return [t for t in result[0].sequences_ids[0] if t != self.tokenizer.eos_token_id]


ENGINES = {
    "transformers fp32 (reference)": lambda m, b: TransformersEngine(b),
    "transformers bf16": lambda m, b: TransformersEngine(b, dtype="bfloat16"),
    "transformers fp32, static cache + torch.compile": lambda m, b: TransformersEngine(b, compiled=True),
    # The converted folder holds int8 weights; compute_type says what they become at load.
    "ctranslate2, int8 weights, float32 compute": lambda m, b: Ct2Engine(m, b, "float32"),
    "ctranslate2, int16 compute": lambda m, b: Ct2Engine(m, b, "int16"),
    "ctranslate2 int8 (weights and activations)": lambda m, b: Ct2Engine(m, b, "int8"),
}


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path(".kbqa"))
    parser.add_argument("--collection", default="default")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--min-prompt-tokens", type=int, default=850)
    parser.add_argument("--engines", nargs="*", default=list(ENGINES), help=f"any of {list(ENGINES)}")
    parser.add_argument("--out", type=Path, default=Path("benchs/results/generator_speed.md"))
    args = parser.parse_args()

    settings = Settings(home=args.home)
    service = KbqaService.load(settings, with_generator=False)
    collection = service.collection(args.collection)
    hits = [collection.search(q, 5)[:5] for q in ON_TOPIC]
    prompts = [build_messages(q, passages_of(h)) for q, h in zip(ON_TOPIC, hits)]
    # The same questions with the serving default of 3 passages: what a user's first token costs.
    served = [build_messages(q, passages_of(h[:settings.prompt_passages])) for q, h in zip(ON_TOPIC, hits)]
    models_dir, base = settings.kbqa_home.models_dir, model_path(settings.kbqa_home.models_dir, GENERATOR_BASE)

    rows, reference = [], None
    for name in args.engines:
        print(f"-- {name}", flush=True)
        start = time.perf_counter()
        engine = ENGINES[name](models_dir, base)
        ids = [engine.ids(m) for m in prompts]
        at = next((n for n, i in enumerate(ids) if len(i) >= args.min_prompt_tokens), max(range(len(ids)), key=lambda n: len(ids[n])))
        timing, timing_served = ids[at], engine.ids(served[at])
        engine.run(timing, args.new_tokens, forced=True)  # warm-up (and compilation, for torch.compile)
        setup = time.perf_counter() - start
        answers = [engine.run(i, args.new_tokens) for i in ids]
        texts = [engine.tokenizer.decode(a, skip_special_tokens=True).strip() for a in answers]
        if reference is None:
            reference = texts
        # Degenerate output (the failure seen with naive int8) repeats a few tokens over and over.
        distinct = statistics.mean(len(set(a)) / max(len(a), 1) for a in answers)
        firsts = [timed(lambda: engine.run(timing, 1)) for _ in range(args.runs)]
        fulls = [timed(lambda: engine.run(timing, args.new_tokens, forced=True)) for _ in range(args.runs)]
        first, full = statistics.median(firsts), statistics.median(fulls)
        first_served = statistics.median(timed(lambda: engine.run(timing_served, 1)) for _ in range(args.runs))
        rows.append({"engine": name, "prompt": len(timing), "setup": setup,
                     "same": sum(t == r for t, r in zip(texts, reference)), "f1": statistics.mean(
                         token_f1(t, r) for t, r in zip(texts, reference)), "distinct": distinct,
                     "first": first, "first_served": first_served, "served": len(timing_served), "decode": (args.new_tokens - 1) / (full - first), "full": full,
                     "sample": texts[0][:120]})
        print(rows[-1], flush=True)

    base_row = rows[0]
    lines = [f"Generator speed, {os.cpu_count()} CPU cores ({_cpu_name()}); SmolLM2-135M, prompt of "
             f"{base_row['prompt']} tokens (5 kb/ passages), {args.new_tokens} new tokens forced, median of "
             f"{args.runs} after a warm-up. Answers: {len(prompts)} kb/ questions, greedy, compared with the first row.",
             "", "| engine | answers identical to fp32 | token-F1 to fp32 answer | distinct-token share | first token (s) | "
             f"decode (tokens/s) | {args.new_tokens} tokens (s) | first-token speed-up | decode speed-up | load + warm-up (s) | "
             f"first token, {settings.prompt_passages} passages = {base_row['served']} tokens (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['engine']} | {r['same']}/{len(prompts)} | {r['f1']:.2f} | {r['distinct']:.2f} | "
                     f"{r['first']:.3f} | {r['decode']:.1f} | {r['full']:.2f} | {base_row['first'] / r['first']:.1f}x | "
                     f"{r['decode'] / base_row['decode']:.1f}x | {r['setup']:.0f} | {r['first_served']:.3f} |")
    lines += ["", "First answer of each engine (question: " + repr(ON_TOPIC[0]) + "):", ""]
    lines += [f"- {r['engine']}: {r['sample']!r}" for r in rows]
    publish(lines, args.out)


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


if __name__ == "__main__":
    main()
