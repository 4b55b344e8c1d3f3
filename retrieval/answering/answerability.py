"""Does a passage hold the answer to the question? A small cross-encoder says, before anything is generated.

The generator's own abstention is weak evidence: its first-token probability of abstaining barely
differs between prompts that hold the answer and prompts that do not (README). A cross-encoder
reads question and passage together and is trained for exactly this call (distill/answerability_train.py),
so the answerer asks it first and abstains without generating when no prompt passage scores high enough.
It is all-MiniLM-L6-v2 (the student's start) with a one-logit head, fully fine-tuned (stored in fp16). The same class
serves the answer-sentence scorer (retrieval/answering/selection.py), trained on (question, sentence) pairs.
None ships: it is opt-in (`kbqa train-answerability --activate`), because it buys recall on unanswerable
questions with abstentions on answerable ones (README).
"""
from __future__ import annotations

import json
from pathlib import Path

MAX_LENGTH = 256


def pair_text(title: str, text: str) -> str:
    return f"{title}\n{text}" if title else text


class AnswerabilityScorer:
    def __init__(self, model, tokenizer, max_length: int = MAX_LENGTH, device: str = "cpu"):
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.device = device

    @classmethod
    def load(cls, adapter: Path, base: Path, device: str = "cpu") -> AnswerabilityScorer:
        """``adapter``: a folder written by `kbqa train-answerability` (or the shipped one); ``base``: MiniLM."""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        adapter, base = Path(adapter), Path(base)
        settings = json.loads((adapter / "training.json").read_text()) if (adapter / "training.json").exists() else {}
        if not (adapter / "config.json").is_file():
            raise FileNotFoundError(f"{adapter} holds no scorer (no config.json): train one, or run `kbqa prepare`")
        model = AutoModelForSequenceClassification.from_pretrained(adapter, num_labels=1, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(base)
        return cls(model, tokenizer, settings.get("config", {}).get("max_length", MAX_LENGTH), device)

    def scores(self, question: str, passages: list) -> list[float]:
        """p(holds the answer) for each passage (objects with .title and .text), in their order."""
        import torch

        if not passages:
            return []
        batch = self.tokenizer([question] * len(passages), [pair_text(p.title, p.text) for p in passages],
                               truncation="longest_first", max_length=self.max_length, padding=True,
                               return_tensors="pt").to(self.device)
        with torch.inference_mode():
            logits = self.model(**batch).logits[:, 0]
        return torch.sigmoid(logits).tolist()
