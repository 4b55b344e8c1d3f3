"""Customers' logged questions as distillation queries: pseudo-queries (titles, headings, sentences)
do not look like "how do I ... when ..." questions, the questions customers really asked do. They need no labels:
the teacher ranks the collection's passages for each, and its top passage is the positive.

Before a logged question is trained on or stored in a model folder, what a lexicon recognises as personal data is
replaced by a placeholder: e-mail addresses, phone and card numbers, IBANs, URLs and long key-like tokens. A lexicon
misses names and free-text addresses; the README says so.
"""
from __future__ import annotations

import re

import numpy as np

from distill.pseudo_queries import PseudoQuery

SCRUB = (
    (re.compile(r"https?://\S+|www\.\S+", re.I), "<url>"),
    (re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+"), "<email>"),
    (re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"), "<iban>"),
    (re.compile(r"\b(?:\d[ -]?){12,18}\d\b"), "<card>"),
    (re.compile(r"(?<!\w)\+?\d[\d ().-]{6,}\d\b"), "<phone>"),
    (re.compile(r"\b(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Za-z])[A-Za-z0-9_-]{20,}\b"), "<token>"),
)
MIN_WORDS = 3
MIN_FOR_VALIDATION = 50   # logged questions needed before they also decide promotion


def scrub(text: str) -> str:
    for pattern, placeholder in SCRUB:
        text = pattern.sub(placeholder, text)
    return text


def usable_questions(questions: list[str]) -> list[str]:
    """Scrubbed, deduplicated (case and spacing), at least MIN_WORDS words, in first-asked order."""
    seen, out = set(), []
    for question in questions:
        clean = " ".join(scrub(question).split())
        key = clean.lower()
        if len(clean.split()) >= MIN_WORDS and key not in seen:
            seen.add(key)
            out.append(clean)
    return out


def teacher_labelled(questions: list[str], teacher_questions: np.ndarray, teacher_passages: np.ndarray,
                     chunk_ids: list[str], doc_ids: list[str]) -> list[PseudoQuery]:
    """Each question with the teacher's top passage as its positive."""
    top = np.argmax(teacher_questions @ teacher_passages.T, axis=1)
    return [PseudoQuery(q, chunk_ids[i], doc_ids[i], "logged") for q, i in zip(questions, top)]
