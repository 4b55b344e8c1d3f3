"""The generator: question + numbered passages -> a short answer citing them as [n]."""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

from retrieval.models import verify

ABSTENTION = "I don't know based on the documentation."
SYSTEM_PROMPT = (
    "You are a customer support assistant. Answer the question using only the numbered passages. "
    "Cite the passage you used like [1]. Keep the answer short. If the passages do not answer the "
    f"question, reply exactly: {ABSTENTION}"
)
_ABSTAIN_PATTERN = re.compile(r"\b(i don't know|i do not know|i'm not sure|cannot answer|can't answer)\b", re.I)
_CITATION = re.compile(r"\[(\d{1,2})\]")


@dataclass
class Passage:
    title: str
    text: str


def build_messages(question: str, passages: list[Passage]) -> list[dict]:
    numbered = "\n\n".join(f"[{n}] {p.title}\n{p.text}" for n, p in enumerate(passages, start=1))
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Passages:\n{numbered}\n\nQuestion: {question}"},
    ]


def says_abstain(answer: str) -> bool:
    return bool(_ABSTAIN_PATTERN.search(answer))


def cited_numbers(answer: str, n_passages: int) -> tuple[str, list[int]]:
    """Keep citations [n] with 1 <= n <= n_passages (first-seen order); strip any other [n] from the text."""
    kept: list[int] = []

    def keep_or_drop(match: re.Match) -> str:
        n = int(match.group(1))
        if 1 <= n <= n_passages:
            if n not in kept:
                kept.append(n)
            return match.group(0)
        return ""

    cleaned = _CITATION.sub(keep_or_drop, answer)
    cleaned = re.sub(r"[ \t]+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", cleaned)).strip()
    return cleaned, kept


class Generator:
    """SmolLM2 (or a fine-tuned successor) from a prepared checkpoint folder, greedy decoding."""

    def __init__(self, model_dir: Path, device: str | None = None, max_new_tokens: int = 96):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_dir = Path(model_dir)
        verify(model_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(self.device).eval()
        self.max_new_tokens = max_new_tokens
        self.name = model_dir.name
        self._lock = threading.Lock()  # one generation at a time: the CPU has no spare cores for two

    def generate(self, messages: list[dict]) -> tuple[str, int, int]:
        """(text, prompt tokens, new tokens)."""
        import torch

        inputs = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                    return_tensors="pt", return_dict=True).to(self.device)
        with self._lock, torch.inference_mode():
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                         repetition_penalty=1.1, pad_token_id=self.tokenizer.eos_token_id)
        prompt_len = inputs["input_ids"].shape[1]
        new = output[0][prompt_len:]
        return self.tokenizer.decode(new, skip_special_tokens=True).strip(), prompt_len, len(new)
