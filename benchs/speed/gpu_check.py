"""kbqa's GPU path, measured on a GPU machine (issue 16). Correctness first, then speed; one table per part.

    python -m benchs.speed.gpu_check --make-assets .gpu-assets      # here: the real models' configs and tokenizers, no weights
    python -m benchs.speed.gpu_check --assets .gpu-assets --out OUT  # on the GPU machine

The machine lent to kbqa takes no file over 64 MiB, so the models are built there with random weights and the real
shapes (MiniLM-L6 student, SmolLM2-135M generator) and the real tokenizers: speeds are real, answers are not
(answer quality under half precision is benchs/quality/half_precision.py, on the CPU with the real weights).

1. Memory: what importing kbqa (bm25s, and JAX behind it when installed) takes from the GPU, against a bare
   ``import bm25s`` in a process that does not set JAX to the CPU first.
2. Encoder: passages/s encoding real knowledge-base text (kb/docs) the old way (float32, sentence-transformers'
   encode 64 at a time) and the new (float16, tokenising thread ahead, vectors back once), beside the float16
   forward pass alone on pre-tokenised batches (the ceiling); cosine of the new vectors to the old.
3. Generator: streamed tokens/s of one answer in float32 (the old default) and bfloat16, and answers from N clients
   at once with batching (max_batch 8) against one at a time; the prompts are real (three kb/docs passages).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[2]
ENCODER_FILES = ("config.json", "config_sentence_transformers.json", "modules.json", "sentence_bert_config.json",
                 "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "1_Pooling/config.json")
GENERATOR_FILES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                   "chat_template.jinja")


def make_assets(models: Path, out: Path) -> None:
    for name, files in (("student-minilm", ENCODER_FILES), ("generator-base", GENERATOR_FILES)):
        for f in files:
            target = out / name / f
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(models / name / f, target)
    print(f"assets in {out}: {sum(p.stat().st_size for p in out.rglob('*') if p.is_file()) / 1e6:.1f} MB")


def random_models(assets: Path, work: Path) -> tuple[Path, Path]:
    """The real configs and tokenizers with random weights, saved as prepared model folders."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    from retrieval.model_store import write_manifest

    torch.manual_seed(0)
    encoder, generator = work / "student-minilm", work / "generator-base"
    shutil.copytree(assets / "student-minilm", encoder, dirs_exist_ok=True)
    AutoModel.from_config(AutoConfig.from_pretrained(encoder)).save_pretrained(encoder)
    shutil.copytree(assets / "generator-base", generator, dirs_exist_ok=True)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(generator)).save_pretrained(generator)
    for folder in (encoder, generator):
        write_manifest(folder, "random weights, real shapes (benchs/speed/gpu_check.py)")
    return encoder, generator


def gpu_used_mib() -> int:
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


MEMORY_PROBE = {
    "bare `import bm25s` (JAX free to take the GPU)":
        "import bm25s, bm25s.selection",
    "kbqa: serve.app imported, a BM25 index built and searched":
        "import numpy as np, serve.app\nfrom retrieval.bm25 import BM25Index\n"
        "BM25Index.build(np.arange(3), ['refund policy', 'cookies', 'team']).search('refund', 2)",
}


def memory_check() -> list[str]:
    lines = ["## GPU memory taken by imports", "", "| process | GPU memory used while it runs (MiB) | before (MiB) |",
             "|---|---|---|"]
    for label, code in MEMORY_PROBE.items():
        before = gpu_used_mib()
        probe = (f"{code}\nimport subprocess\nprint(subprocess.run(['nvidia-smi', '--query-gpu=memory.used', "
                 "'--format=csv,noheader,nounits'], capture_output=True, text=True).stdout.split()[0])")
        env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}   # as a user's shell has it
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT,
                                env={**env, "PYTHONPATH": os.pathsep.join(sys.path)})
        used = result.stdout.strip().splitlines()[-1] if result.returncode == 0 else f"failed: {result.stderr[-300:]}"
        lines.append(f"| {label} | {used} | {before} |")
        print(lines[-1], flush=True)
    return lines + [""]


def kb_texts(n: int) -> list[str]:
    """Real passages: kb/docs cut into ~600-character pieces, repeated (with a counter) up to n."""
    pieces = []
    for path in sorted((ROOT / "kb" / "docs").glob("*.md")):
        text = path.read_text()
        pieces += [text[i:i + 600] for i in range(0, len(text), 600) if text[i:i + 600].strip()]
    return [f"{pieces[i % len(pieces)]} ({i})" for i in range(n)]


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def encoder_check(folder: Path, n: int) -> list[str]:
    import numpy as np
    import torch

    from retrieval.encoder import PIPELINE_BATCH, SentenceEncoder

    texts = kb_texts(n)
    old = SentenceEncoder(folder, dtype="float32", pipeline=False)
    new = SentenceEncoder(folder)   # this machine's defaults
    encoders = {"old: float32, encode() 64 at a time": old,
                "float16, encode() 64 at a time": SentenceEncoder(folder, dtype="float16", pipeline=False),
                "float16, pipeline, 1 tokenising thread": SentenceEncoder(folder, dtype="float16", pipeline=True,
                                                                          pipeline_threads=1),
                f"new default: {new.dtype}, pipeline {new.pipeline}, {new.pipeline_threads} tokenising threads, "
                f"{PIPELINE_BATCH} a batch": new}
    for encoder in encoders.values():
        encoder.encode(texts[:2048])   # warm-up: kernels, allocator
    rows, vectors = [], {}
    for label, encoder in encoders.items():
        times = []
        for _ in range(3):
            sync()
            start = time.perf_counter()
            vectors[label] = encoder.encode(texts)
            times.append(time.perf_counter() - start)
        rows.append((label, n / statistics.median(times)))
    # The ceiling: the float16 forward pass alone, the same batches pre-tokenised and already on the GPU.
    order = np.argsort([-len(t) for t in texts], kind="stable")
    batches = [new.model.preprocess([texts[i] for i in order[s:s + PIPELINE_BATCH]])
               for s in range(0, n, PIPELINE_BATCH)]
    batches = [{k: v.to(new.device) if torch.is_tensor(v) else v for k, v in b.items()} for b in batches]
    times = []
    for _ in range(3):
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            for b in batches:
                new.model(b)
        sync()
        times.append(time.perf_counter() - start)
    rows.append(("ceiling: float16 forward only (pre-tokenised, on the GPU)", n / statistics.median(times)))
    labels = list(vectors)
    cosine = (vectors[labels[0]] * vectors[labels[-1]]).sum(axis=1)
    lines = ["## Encoder (MiniLM-L6 shapes, random weights)", "",
             f"{n} real kb/docs passages of up to 600 characters; median of 3. Correctness: cosine of the new "
             f"default's vectors to the old's: min {cosine.min():.5f}, mean {cosine.mean():.5f}.", "",
             "| path | passages/s | vs old |", "|---|---|---|"]
    lines += [f"| {label} | {rate:,.0f} | {rate / rows[0][1]:.1f}x |" for label, rate in rows]
    print("\n".join(lines), flush=True)
    return lines + [""]


def prompts(n: int) -> list[list[dict]]:
    from retrieval.answering.records import Passage
    from retrieval.answering.prompt import build_messages

    texts = kb_texts(3 * n)
    questions = ["How do I cancel my subscription?", "Does Plausible use cookies?", "How do I add a team member?",
                 "How do I export my stats?", "Can I change my domain name?", "How do I reset my password?"]
    return [build_messages(questions[i % len(questions)], [Passage(f"Doc {j}", texts[3 * i + j]) for j in range(3)])
            for i in range(n)]


def answer_all(generator, batch: list[list[dict]]) -> tuple[float, list[float], int]:
    """Every prompt from its own thread at once: (wall seconds, each answer's seconds, new tokens in all)."""
    barrier, seconds, tokens = threading.Barrier(len(batch)), [], []

    def ask(messages):
        barrier.wait()
        start, stats = time.perf_counter(), {}
        for _ in generator.stream(messages, stats):
            pass
        seconds.append(time.perf_counter() - start)
        tokens.append(stats["new_tokens"])

    threads = [threading.Thread(target=ask, args=(m,)) for m in batch]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, seconds, sum(tokens)


def generator_check(folder: Path, new_tokens: int, clients: list[int]) -> list[str]:
    from retrieval.answering.engines.local import Generator

    one = prompts(1)[0]
    new = Generator(folder, max_new_tokens=new_tokens)   # this machine's defaults
    generators = {f"{dtype}, {'one at a time' if batch == 1 else f'batches of up to {batch}'}":
                  Generator(folder, dtype=dtype, max_batch=batch, max_new_tokens=new_tokens)
                  for dtype, batch in (("float32", 1), ("bfloat16", 1), ("float32", 8))}
    generators[f"new default: {new.dtype}, batches of up to {new.max_batch}"] = new
    prompt_tokens = new.tokenizer.apply_chat_template(
        one, add_generation_prompt=True, return_dict=True)["input_ids"]
    # Correctness first: batched rows write what the same prompt writes alone (float32, to leave padding as the
    # only difference).
    solo32 = Generator(folder, dtype="float32", max_batch=1, max_new_tokens=16)
    batch32 = Generator(folder, dtype="float32", max_batch=8, max_new_tokens=16)
    checks = prompts(8)
    alone = [solo32.generate(m)[0] for m in checks]
    together: dict[int, str] = {}

    def ask(i):
        together[i] = batch32.generate(checks[i])[0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    same = sum(alone[i] == together[i] for i in range(8))
    del solo32, batch32
    # What streaming, batching and the logits processors cost: transformers' own generate, batch 1, no streamer.
    raw = []
    for dtype in ("float32", "bfloat16"):
        model = generators[f"{dtype}, one at a time"].model
        inputs = new.tokenizer.apply_chat_template([one], add_generation_prompt=True, return_tensors="pt",
                                                  return_dict=True).to(model.device)
        model.generate(**inputs, max_new_tokens=8, do_sample=False)
        start = time.perf_counter()
        out = model.generate(**inputs, max_new_tokens=new_tokens, do_sample=False)
        raw.append(f"{dtype} {(out.shape[1] - inputs['input_ids'].shape[1]) / (time.perf_counter() - start):.0f}")
    lines = ["## Generator (SmolLM2-135M shapes, random weights)", "",
             f"Prompts of {len(prompt_tokens)} tokens (three kb/docs passages and a question), {new_tokens} new "
             f"tokens an answer (random weights rarely stop early). Correctness: in float32, {same} of 8 prompts "
             f"batched together wrote exactly what each wrote alone. transformers' own generate (batch 1, no "
             f"streamer, no logits processors), new tokens/s: {', '.join(raw)}.", "",
             "| engine | clients | answers/s | new tokens/s (all clients) | answer p50 s | answer max s |",
             "|---|---|---|---|---|---|"]
    for label, generator in generators.items():
        answer_all(generator, [one])   # warm-up
        # One at a time, N clients take N times one answer: 32 adds nothing but minutes of device time.
        for n in (clients if generator.max_batch > 1 else [c for c in clients if c <= (8 if "32" in label else 1)]):
            wall, seconds, tokens = answer_all(generator, prompts(n))
            lines.append(f"| {label} | {n} | {n / wall:.2f} | {tokens / wall:,.0f} | "
                         f"{statistics.median(seconds):.2f} | {max(seconds):.2f} |")
            print(lines[-1], flush=True)
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--make-assets", type=Path, help="write the configs and tokenizers here, then stop")
    parser.add_argument("--models", type=Path, default=ROOT / ".kbqa" / "models")
    parser.add_argument("--assets", type=Path, default=ROOT / ".gpu-assets")
    parser.add_argument("--passages", type=int, default=10000)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--clients", type=int, nargs="*", default=[1, 8, 32])
    parser.add_argument("--parts", nargs="*", default=["memory", "encoder", "generator"])
    parser.add_argument("--out", type=Path, default=ROOT / "benchs" / "results" / "gpu_check.md")
    args = parser.parse_args()
    if args.make_assets:
        return make_assets(args.models, args.make_assets)

    import torch

    from retrieval.answering.engines.cpu import describe

    work = Path(os.environ.get("TMPDIR", "/tmp")) / "kbqa-gpu-check"
    encoder, generator = random_models(args.assets, work)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU (CPU dry run)"
    # The header benchs/common.publish writes, made here: the device machine has this tree's files but no git, and
    # this script imports nothing of benchs (only the product's packages travel there as wheels).
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout \
        if shutil.which("git") else ""
    lines = [f"Command: `python -m benchs.speed.gpu_check {' '.join(sys.argv[1:])}`",
             f"Commit: {head.strip() or os.environ.get('KBQA_COMMIT', 'not recorded (no git here)')}",
             f"CPU: {describe()}", "", "# kbqa on a GPU (benchs/speed/gpu_check.py)", "",
             f"GPU: {device}; torch {torch.__version__}", ""]
    parts = {"memory": memory_check,
             "encoder": lambda: encoder_check(encoder, args.passages),
             "generator": lambda: generator_check(generator, args.new_tokens, args.clients)}
    for name in args.parts:
        try:
            lines += parts[name]()
        except Exception as exc:   # one part failing must not cost the others' figures
            import traceback

            traceback.print_exc()
            lines += [f"## {name}: FAILED: {exc!r}", ""]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")
    print(json.dumps({"written": str(args.out)}))


if __name__ == "__main__":
    main()
