"""The training loop: sentence-transformers' MarginMSELoss on teacher-scored triples plus its
MultipleNegativesRankingLoss (in-batch contrastive), on one set of embeddings per step."""
from __future__ import annotations

import random

import numpy as np
import torch
from sentence_transformers.sentence_transformer.losses import MarginMSELoss, MultipleNegativesRankingLoss
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from distill.config import DistillConfig
from distill.mining import Triple


def _embed(student, texts: list[str], device: str) -> torch.Tensor:
    features = student.preprocess(texts)
    features = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}
    return torch.nn.functional.normalize(student(features)["sentence_embedding"], dim=-1)  # (B, D)


def train_student(student, triples: list[Triple], passages: list[str], config: DistillConfig, device: str,
                  show_progress: bool = False, always: list[Triple] | None = None,
                  prompts: dict | None = None) -> list[float]:
    """Trains ``student`` (a SentenceTransformer) in place; returns the loss of every step.

    Both losses read the same (query, positive, negative) embeddings through ``compute_loss_from_embeddings``, so
    each text is encoded once per step, not once per loss. sentence-transformers' trainer is not used: it needs the
    ``datasets`` package and its own sampler, and this loop's example budget (``max_examples``, repeated epochs for
    small collections) is what the README's distillation figures were measured with. ``always`` triples are kept
    whatever the budget. ``prompts``: the prefixes the student reads questions and passages with (e5's "query: " and
    "passage: "); a student with them is multilingual, and its word embeddings stay as they were: one collection's
    words must not move the shared space away from the languages it does not hold (and the 96M-parameter table would
    triple a step's optimiser work)."""
    torch.manual_seed(config.seed)
    order = triples[:]
    random.Random(config.seed).shuffle(order)
    # ``always`` (customers' logged questions) are few and the point of the run: never cut by the budget.
    always = always or []
    order = always + order[: max(0, config.max_examples - len(always))]
    # Spend the example budget: few triples are seen several times (up to max_epochs), many once.
    epochs = max(config.epochs, min(config.max_epochs, config.max_examples // max(1, len(order))))
    steps = epochs * max(1, (len(order) + config.batch_size - 1) // config.batch_size)
    query_prefix, passage_prefix = (prompts or {}).get("query", ""), (prompts or {}).get("passage", "")
    if prompts:
        for name, parameter in student.named_parameters():
            if "word_embeddings" in name:
                parameter.requires_grad_(False)
    student.to(device).train()
    student.max_seq_length = config.passage_max_tokens
    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=config.lr)
    schedule = get_linear_schedule_with_warmup(optimizer, int(steps * config.warmup_ratio), steps)
    # Embeddings are L2-normalised, so the margin loss's dot product and the ranking loss's cosine agree.
    margin_loss, contrastive_loss = MarginMSELoss(student), MultipleNegativesRankingLoss(student, scale=20.0)
    losses: list[float] = []
    with tqdm(total=steps, desc="training student", disable=not show_progress) as bar:
        for epoch in range(epochs):
            random.Random(config.seed + epoch).shuffle(order)
            for start in range(0, len(order), config.batch_size):
                batch = order[start:start + config.batch_size]
                embeddings = [_embed(student, [query_prefix + t.query for t in batch], device),
                              _embed(student, [passage_prefix + passages[t.positive] for t in batch], device),
                              _embed(student, [passage_prefix + passages[t.negative] for t in batch], device)]
                target = torch.tensor([t.teacher_margin for t in batch], dtype=torch.float32, device=device)
                loss = config.margin_weight * margin_loss.compute_loss_from_embeddings(embeddings, target)
                if config.contrastive_weight > 0:
                    loss = loss + config.contrastive_weight * contrastive_loss.compute_loss_from_embeddings(
                        embeddings, target)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                losses.append(loss.item())
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    student.eval()
    return losses
