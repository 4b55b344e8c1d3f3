"""Distillation losses, one small module each (the shape of sentence-transformers' losses)."""
from __future__ import annotations

import torch
from torch import nn


class MarginMSELoss(nn.Module):
    """Match the student's score margin to the teacher's (Hofstätter et al., 2020).

    | inputs | shape |
    |---|---|
    | query, positive, negative embeddings (L2-normalised) | (B, D) each |
    | teacher margin: score(q, pos) - score(q, neg) | (B,) |
    """

    def forward(self, query: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                teacher_margin: torch.Tensor) -> torch.Tensor:
        student_margin = (query * positive).sum(-1) - (query * negative).sum(-1)  # (B,)
        return nn.functional.mse_loss(student_margin, teacher_margin)


class InBatchContrastiveLoss(nn.Module):
    """Each query must pick its own passage among every passage in the batch (positives and hard
    negatives of the other queries too): cross-entropy over scaled cosines (van den Oord et al., 2018).

    | inputs | shape |
    |---|---|
    | query, positive, negative embeddings (L2-normalised) | (B, D) each |
    """

    def __init__(self, scale: float = 20.0):
        super().__init__()
        self.scale = scale

    def forward(self, query: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        candidates = torch.cat([positive, negative])                 # (2B, D)
        logits = self.scale * query @ candidates.T                   # (B, 2B)
        labels = torch.arange(len(query), device=query.device)       # query i's positive is row i
        return nn.functional.cross_entropy(logits, labels)
