"""`kbqa train-generator`: LoRA fine-tuning of the generator on grounded, cited answers and abstentions.

LoRA rather than full fine-tuning: the adapter is 20 MB, training touches 3.6% of the weights (less
memory, faster on CPU), and it is merged at load so serving costs nothing extra. The adapter is written
under models/generator-adapters/.staging-*, given its manifest, then renamed to vNNNN; with
``activate`` it is named in CURRENT (replaced atomically) and served from the next start. An
interrupted run changes nothing. Not activated by default: measure it first (benchs/quality/answer_quality.py).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from retrieval.model_store import publish_version
from retrieval.answering.prompt import build_messages
from retrieval.answering.registry import ADAPTERS

SHIPPED_EXAMPLES = Path(__file__).resolve().parent / "data" / "generator_train.jsonl"


@dataclass
class GeneratorTrainConfig:
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj",
                                                               "gate_proj", "up_proj", "down_proj"])
    lr: float = 2e-4
    epochs: int = 1
    grad_accum: int = 8            # examples per optimizer step (batch of one: no padding work on CPU)
    max_examples: int | None = None
    max_prompt_tokens: int = 1024  # longer examples are skipped: cutting would drop the passage with the answer
    seed: int = 0


def publish_training(parent: Path, staging: Path, report: dict, command: str, activate: bool) -> dict:
    """A trainer's folder with its training.json, published as the next vNNNN under ``parent`` (CURRENT too if
    ``activate``); the report gains version and activated."""
    (staging / "training.json").write_text(json.dumps(report, indent=1))
    version = publish_version(parent, staging, f"{command} ({report.get('source') or 'defaults'})", activate)
    report["version"], report["activated"] = version, activate
    return report


def encode_example(tokenizer, example: dict) -> tuple[list[int], list[int]]:
    """(input ids, labels): the loss is on the answer tokens only."""
    messages = build_messages(example["question"], [_Passage(p) for p in example["passages"]])
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    prompt = list(prompt)
    answer = tokenizer(example["target"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    return prompt + answer, [-100] * len(prompt) + answer


class _Passage:
    def __init__(self, p: dict):
        self.title, self.text = p["title"], p["text"]


def train_generator(base_dir: Path, examples: list[dict], models_dir: Path, config: GeneratorTrainConfig,
                    device: str = "cpu", show_progress: bool = False, source: str = "", activate: bool = False) -> dict:
    """Train an adapter on ``examples`` and publish it as the next version (CURRENT if ``activate``)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not examples:
        raise ValueError("no training examples")
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    examples = list(examples)
    rng.shuffle(examples)
    if config.max_examples:
        examples = examples[: config.max_examples]
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha,
                                             lora_dropout=config.lora_dropout, target_modules=config.target_modules,
                                             task_type="CAUSAL_LM"))
    model.to(device).train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    encoded = [encode_example(tokenizer, e) for e in examples]
    long = sum(1 for ids, labels in encoded if labels.count(-100) > config.max_prompt_tokens)
    encoded = [(ids, labels) for ids, labels in encoded if labels.count(-100) <= config.max_prompt_tokens]
    if not encoded:
        raise ValueError(f"every example's prompt is longer than {config.max_prompt_tokens} tokens")
    total_steps = max(1, (len(encoded) * config.epochs) // config.grad_accum)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / total_steps))
    start, losses, step_losses = time.perf_counter(), [], []
    progress = tqdm(total=len(encoded) * config.epochs, desc="train generator", unit="ex", disable=not show_progress)
    for epoch in range(config.epochs):
        order = list(range(len(encoded)))
        rng.shuffle(order)
        for i, index in enumerate(order, start=1):
            ids, labels = encoded[index]
            out = model(input_ids=torch.tensor([ids], device=device), labels=torch.tensor([labels], device=device))
            (out.loss / config.grad_accum).backward()
            step_losses.append(out.loss.item())
            if i % config.grad_accum == 0 or i == len(order):
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                losses.append(round(sum(step_losses) / len(step_losses), 4))
                step_losses = []
                progress.set_postfix(loss=losses[-1])
            progress.update(1)
    progress.close()

    adapters = Path(models_dir) / ADAPTERS
    adapters.mkdir(parents=True, exist_ok=True)
    staging = adapters / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    report = {"base": Path(base_dir).name, "examples": len(encoded), "skipped_too_long": long, "trainable_params": trainable,
              "seconds": round(time.perf_counter() - start, 1), "device": device, "loss_per_step": losses,
              "config": asdict(config), "source": source}
    return publish_training(adapters, staging, report, "kbqa train-generator", activate)
