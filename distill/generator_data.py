"""Training examples for the grounded generator: question + shuffled passages -> cited answer or abstention.

An example is {"question", "passages": [{"title", "text"}], "target"}; the prompt is built at training
time with retrieval.answering.generator.build_messages, so training and serving always share one prompt format.
Passages are the gold passage among distractors retrieved by kbqa itself; for a share of examples the
gold passage is left out and the target becomes the abstention sentence.
"""
from __future__ import annotations

import random
import re
from pathlib import Path

from retrieval.answering.prompt import ABSTENTION
from distill.jsonl import read_jsonl
from retrieval.answering.grounding import content_words, split_sentences

MAX_TARGET_WORDS = 60
_CITATION = re.compile(r"\s*\[\d{1,2}\]")   # a logged answer's own citation markers, renumbered by make_example


def short_answer(text: str, max_words: int = MAX_TARGET_WORDS) -> str:
    """The first sentences of a reference answer, within a word budget: the answers we want are short."""
    kept: list[str] = []
    for sentence in split_sentences(" ".join(text.split())):
        if kept and len(" ".join(kept + [sentence]).split()) > max_words:
            break
        kept.append(sentence)
    words = " ".join(kept).split()
    return " ".join(words[:max_words]) + (" ..." if len(words) > max_words else "")


def grounded_answer(reference: str, passage: str, max_words: int = 40) -> str:
    """The run of passage sentences (at most two, within ``max_words``) that overlaps the reference answer most.

    Reference answers often open with sentences the passage does not hold (E-Manual QA answers are long
    extracts of a whole document). Trained on those, the model could not predict its targets from the prompt
    and learnt that the always-predictable abstention was the cheaper bet (94% abstentions on answerable
    questions). A target copied from the passage is predictable from the prompt and passes the support check."""
    wanted = content_words(reference)
    sentences = split_sentences(" ".join(passage.split()))
    best, best_score = "", -1.0
    for start in range(len(sentences)):
        for end in (start + 1, start + 2):
            if end > len(sentences):
                continue
            text = " ".join(sentences[start:end])
            if end > start + 1 and len(text.split()) > max_words:
                continue
            words = content_words(text)
            common = len(words & wanted)
            score = 2 * common / (len(words) + len(wanted)) if words and wanted else 0.0
            if score > best_score:
                best, best_score = text, score
    return short_answer(best or passage, max_words)


def best_passage(answer: str, candidates: list[dict]) -> dict | None:
    """The candidate sharing most content words with the answer (the gold passage inside a gold document)."""
    words = content_words(answer)
    scored = [(len(words & content_words(c["text"])), i) for i, c in enumerate(candidates)]
    best = max(scored, default=(0, -1))
    return candidates[best[1]] if best[0] > 0 else None


def make_example(question: str, answer: str | None, gold: dict | None, distractors: list[dict],
                 n_passages: int, rng: random.Random) -> dict:
    """Gold among distractors, shuffled, target cites its position; no gold (or no answer) -> abstention."""
    passages = [{"title": d["title"], "text": d["text"]} for d in distractors[: n_passages - (gold is not None)]]
    if gold is not None and answer:
        passages.append({"title": gold["title"], "text": gold["text"]})
        rng.shuffle(passages)
        n = next(i for i, p in enumerate(passages, start=1) if p["text"] == gold["text"])
        target = f"{grounded_answer(answer, gold['text'])} [{n}]"
    else:
        rng.shuffle(passages)
        target = ABSTENTION
    return {"question": " ".join(question.split()), "passages": passages, "target": target}


def faq_pairs(chunks) -> list[tuple[str, str, dict]]:
    """(question, answer, gold passage) from the knowledge base's own FAQs: chunks under a question heading or
    title (``Chunk.faq_question``) and their text."""
    pairs = []
    for chunk in chunks:
        question = chunk.faq_question
        if question and len(chunk.text.split()) >= 8:
            body = chunk.text.split("\n", 1)[-1] if chunk.text.startswith(("#", question)) else chunk.text
            passage = {"title": chunk.context, "text": chunk.text,
                       "chunk_id": chunk.chunk_id}
            pairs.append((question, short_answer(body), passage))
    return pairs


def mined_faq_examples(collection, n_passages: int, seed: int = 0) -> list[dict]:
    """Examples from a collection's own FAQ headings: the section under each question is the gold passage, among
    distractors kbqa retrieves for the question; a quarter leave the gold out and teach abstention."""
    rng = random.Random(seed)
    examples = []
    for question, answer, gold in faq_pairs(collection.store.all_chunks()):
        distractors = [{"title": h.chunk.context, "text": h.chunk.text}
                       for h in collection.search(question, 8) if h.chunk.chunk_id != gold["chunk_id"]]
        keep_gold = rng.random() >= 0.25
        examples.append(make_example(question, answer if keep_gold else None, gold if keep_gold else None,
                                     distractors, n_passages, rng))
    return examples


def feedback_examples(collection, answers: list[dict], n_passages: int, seed: int = 0) -> list[dict]:
    """Examples from the answer log (serve/feedback.py:training_answers): a helpful answer teaches its own text over
    the chunk it cited; a corrected one teaches the correction over the chunk (cited, or retrieved now) that shares
    most words with it. The target is made of that chunk's sentences (``grounded_answer``), like every other example:
    a correction the docs do not hold cannot be learnt as a grounded answer, and is skipped."""
    rng = random.Random(seed)
    chunks = {c.chunk_id: c for c in collection.store.all_chunks()}
    examples = []
    for row in answers:
        hits = collection.search(row["question"], 8)
        cited = [chunks[i] for i in row["chunk_ids"] if i in chunks]
        candidates = cited + [h.chunk for h in hits] if row["corrected"] else cited[:1]
        wanted = content_words(_CITATION.sub("", row["answer"]))
        scored = [(len(wanted & content_words(c.text)), c) for c in candidates]
        if not scored or max(s for s, _ in scored) == 0:
            continue
        gold_chunk = max(scored, key=lambda pair: pair[0])[1]
        gold = {"title": gold_chunk.context, "text": gold_chunk.text}
        distractors = [{"title": h.chunk.context, "text": h.chunk.text} for h in hits
                       if h.chunk.chunk_id != gold_chunk.chunk_id]
        examples.append(make_example(row["question"], _CITATION.sub("", row["answer"]).strip(), gold, distractors,
                                     n_passages, rng))
    return examples


def read_examples(path: Path) -> list[dict]:
    return read_jsonl(path, {"question", "passages", "target"})


def training_examples(shipped: Path | None, extra: list[Path], collection=None, feedback_answers: list[dict] | None = None,
                      n_passages: int = 3) -> tuple[list[dict], dict[str, int]]:
    """Everything `kbqa train-generator` (and anything else training the generator) learns from: the ``shipped``
    examples, ``extra`` JSONL files, the FAQ pairs mined from ``collection`` and, given ``feedback_answers``
    (serve/feedback.py:training_answers), examples from its answer log. Returns (examples, count per source)."""
    examples = read_examples(shipped) if shipped is not None else []
    for path in extra:
        examples += read_examples(path)
    counts = {"given": len(examples), "mined": 0, "feedback": 0}
    if collection is not None:
        mined = mined_faq_examples(collection, n_passages)
        from_feedback = feedback_examples(collection, feedback_answers, n_passages) if feedback_answers is not None \
            else []
        counts.update(mined=len(mined), feedback=len(from_feedback))
        examples += mined + from_feedback
    return examples, counts
