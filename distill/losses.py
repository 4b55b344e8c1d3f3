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


class EmbeddingMSELoss(nn.Module):
    """Pull student embeddings towards the teacher's, projected to the student's width by PCA.

    | inputs | shape |
    |---|---|
    | student embeddings | (B, d) |
    | teacher embeddings projected by TeacherPCA, normalised | (B, d) |
    """

    def forward(self, student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(student, target)


class TeacherPCA:
    """768-d teacher space -> the student's 384-d by the top principal components of the teacher's passages."""

    def __init__(self, teacher_vectors, dim: int):
        import numpy as np

        centred = teacher_vectors - teacher_vectors.mean(0, keepdims=True)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)  # rows of vt: principal directions
        self.mean = teacher_vectors.mean(0)
        self.components = vt[:dim]                              # (d, 768)
        if self.components.shape[0] < dim:                      # fewer passages than dims: pad with zeros
            pad = np.zeros((dim - self.components.shape[0], teacher_vectors.shape[1]), dtype=vt.dtype)
            self.components = np.concatenate([self.components, pad])

    def __call__(self, vectors):
        import numpy as np

        projected = (vectors - self.mean) @ self.components.T  # (N, d)
        return projected / np.maximum(np.linalg.norm(projected, axis=1, keepdims=True), 1e-9)


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


class InBatchDistillLoss(nn.Module):
    """Listwise distillation: the student's softmax over every passage in the batch should match the
    teacher's (KL divergence, temperature-scaled), so the teacher's whole ranking is transferred,
    not one margin per triple.

    | inputs | shape |
    |---|---|
    | query, positive, negative embeddings of the student (L2-normalised) | (B, D) each |
    | teacher scores of each query against the batch's passages [positives; negatives] | (B, 2B) |
    """

    def __init__(self, student_scale: float = 20.0, teacher_scale: float = 20.0):
        super().__init__()
        self.student_scale, self.teacher_scale = student_scale, teacher_scale

    def forward(self, query: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
                teacher_scores: torch.Tensor) -> torch.Tensor:
        student_logits = self.student_scale * query @ torch.cat([positive, negative]).T  # (B, 2B)
        target = nn.functional.softmax(self.teacher_scale * teacher_scores, dim=-1)
        return nn.functional.kl_div(nn.functional.log_softmax(student_logits, dim=-1), target, reduction="batchmean")
