"""What every generator engine is shown and how its text is read back: the grounded prompt, the abstention sentence,
and the ``[n]`` citations."""
from __future__ import annotations

import re

from retrieval.answering.records import Passage

ABSTENTION = "I don't know based on the documentation."
SYSTEM_PROMPT = (
    "You are a customer support assistant. Answer the question using only the numbered passages. "
    "Cite the passage you used like [1]. Keep the answer short. If the passages do not answer the "
    f"question, reply exactly: {ABSTENTION}"
)
_ABSTAIN_PATTERN = re.compile(r"\b(i don't know|i do not know|i'm not sure|cannot answer|can't answer)\b", re.I)
_CITATION = re.compile(r"\[(\d{1,2})\]")


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
