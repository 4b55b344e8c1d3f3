"""`kbqa train-answerability`: fine-tune the answerability cross-encoder (retrieval/answering/answerability.py).

Pairs are (question, passage, label 1 if the passage holds the answer). The whole model is fine-tuned: LoRA
(3 MB instead of 45 MB) collapsed to a constant score on the shipped pairs (README) so only full fine-tuning is offered.
Questions, not pairs, are split for validation, so no question is seen on both sides. Written like every model folder: staging, manifest last, rename to vNNNN; with
``activate`` it is named in CURRENT and served from the next start. An interrupted run changes nothing.
"""
from __future__ import annotations

import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from distill.generator_train import publish_training
from distill.jsonl import read_jsonl
from distill.metrics import auc
from retrieval.answering.answerability import MAX_LENGTH, pair_text
from retrieval.answering.records import Passage
from retrieval.answering.registry import ANSWERABILITY

SHIPPED_PAIRS = Path(__file__).resolve().parent / "data" / "answerability_train.jsonl"


@dataclass
class AnswerabilityTrainConfig:
    lr: float = 5e-5
    epochs: int = 2
    batch_size: int = 16
    max_length: int = MAX_LENGTH
    validation_share: float = 0.2   # of questions, held out to report AUC and pick nothing else
    seed: int = 0
    target: str = "label"           # the field trained on: "label" (0/1), or a graded one in [0, 1] such as the
                                    # sentence pairs' "target"; validation AUC is always against "label"


def _check_pair(row: dict) -> str | None:
    if row["label"] not in (0, 1):
        return f"label must be 0 or 1, got {row['label']!r}"
    target = row.get("target", 0.0)
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0.0 <= target <= 1.0:
        return f"target must be a number in [0, 1], got {target!r}"
    return None


def read_pairs(path: Path) -> list[dict]:
    return read_jsonl(path, {"question", "text", "label"}, _check_pair)


def _rounded(value: float) -> float | None:
    """4 decimals; None (null in training.json, which strict JSON readers accept) when undefined."""
    return None if value != value else round(value, 4)


def split_by_question(pairs: list[dict], share: float, seed: int) -> tuple[list[dict], list[dict]]:
    questions = sorted({p["question"] for p in pairs})
    random.Random(seed).shuffle(questions)
    held = set(questions[: int(len(questions) * share)])
    return [p for p in pairs if p["question"] not in held], [p for p in pairs if p["question"] in held]


def train_answerability(base_dir: Path, pairs: list[dict], models_dir: Path, config: AnswerabilityTrainConfig,
                        device: str = "cpu", show_progress: bool = False, source: str = "",
                        activate: bool = False, registry: str = ANSWERABILITY,
                        command: str = "kbqa train-answerability") -> dict:
    """Train on ``pairs``, report validation AUC, publish as the next version under ``models_dir/registry``
    (CURRENT if ``activate``). The sentence scorer (retrieval/answering/selection.py) is the same model trained on
    (question, sentence) pairs into its own registry folder."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from retrieval.answering.answerability import AnswerabilityScorer

    if not pairs or not any(p["label"] for p in pairs):
        raise ValueError("training needs pairs, and at least one positive")
    rng = random.Random(config.seed)
    torch.manual_seed(config.seed)
    train, valid = split_by_question(pairs, config.validation_share, config.seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForSequenceClassification.from_pretrained(base_dir, num_labels=1, dtype=torch.float32)
    model.to(device).train()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr)
    steps_per_epoch = -(-len(train) // config.batch_size)
    total = max(1, steps_per_epoch * config.epochs)
    warmup = max(1, total // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (total - s) / max(1, total - warmup))))
    # Positives are ~1 in 7: weigh them up so the head does not learn "never".
    positives = sum(p["label"] for p in train)
    mass = sum(float(p.get(config.target, 0.0)) for p in train)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(train) - mass) / max(1.0, mass)))
    start, losses = time.perf_counter(), []
    progress = tqdm(total=total, desc="train answerability", unit="step", disable=not show_progress)
    for _ in range(config.epochs):
        order = list(range(len(train)))
        rng.shuffle(order)
        for i in range(0, len(order), config.batch_size):
            rows = [train[j] for j in order[i:i + config.batch_size]]
            batch = tokenizer([r["question"] for r in rows], [pair_text(r.get("title", ""), r["text"]) for r in rows],
                              truncation="longest_first", max_length=config.max_length, padding=True,
                              return_tensors="pt").to(device)
            labels = torch.tensor([float(r.get(config.target, 0.0)) for r in rows], device=device)
            loss = loss_fn(model(**batch).logits[:, 0], labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            losses.append(round(loss.item(), 4))
            progress.set_postfix(loss=losses[-1])
            progress.update(1)
    progress.close()
    train_seconds = round(time.perf_counter() - start, 1)

    model.eval()
    scorer = AnswerabilityScorer(model, tokenizer, config.max_length, device)
    valid_scores = []
    for row in valid:
        valid_scores += scorer.scores(row["question"], [Passage(row.get("title", ""), row["text"])])
    folder = Path(models_dir) / registry
    folder.mkdir(parents=True, exist_ok=True)
    staging = folder / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    # fp16 on disk halves the shipped size; it loads back as fp32
    model.to(torch.float16).save_pretrained(staging)
    model.to(torch.float32)
    tokenizer.save_pretrained(staging)
    report = {"base": Path(base_dir).name, "pairs": len(train), "positives": positives, "trainable_params": trainable,
              "valid_pairs": len(valid), "valid_auc": _rounded(auc(valid_scores, [r["label"] for r in valid])),
              "seconds": train_seconds, "device": device, "loss_per_step": losses,
              "config": asdict(config), "source": source}
    return publish_training(folder, staging, report, command, activate)
