"""Multi-turn: turn a follow-up ("and how do I cancel it?") into a question that stands alone for retrieval.

A 135M generator rewrites questions unreliably and would add a second generation to every turn, so
this is lexical: a short question that leans on the conversation (a pronoun, or a leading "and"/"what
about") gets the content words of the previous user turn that it lacks, which is what retrieval needs.
"""
from __future__ import annotations

import re

from retrieval.answering.grounding import content_words

_LEANS_ON_CONTEXT = re.compile(
    r"^\s*(and|but|also|so|then|what about|how about)\b|\b(it|its|that|this|these|those|they|them|their|there|one)\b",
    re.I)
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9'-]*")
MAX_FOLLOWUP_WORDS = 14


def is_followup(question: str) -> bool:
    return len(question.split()) <= MAX_FOLLOWUP_WORDS and bool(_LEANS_ON_CONTEXT.search(question))


def standalone_question(question: str, history: list[dict]) -> str:
    """The question itself, or it plus the topic words of the last user turn it depends on."""
    previous = [turn["content"] for turn in history if turn.get("role") == "user" and turn.get("content", "").strip()]
    if not previous or not is_followup(question):
        return question
    have = content_words(question)
    topic: list[str] = []
    for word in _WORD.findall(previous[-1]):
        stem = content_words(word)
        if stem and not stem & have and word.lower() not in (w.lower() for w in topic):
            topic.append(word)
    return f"{question.strip()} ({' '.join(topic)})" if topic else question
