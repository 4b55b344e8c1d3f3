"""Issue 28's two-product help center: the Samsung TV e-manual and the Galaxy S10 manual of emanualqa in one
collection, each section tagged ``product`` (tv | phone), its questions asked with and without the customer's product.

    python -m benchs.quality.two_products --data PATH/TO/shared/data [--answers 60]

Questions: the TV questions of the report split with a gold section, and the 50 S10 questions (gold: the S10 section
whose text contains most of the reference answer's words, kept at >= 0.7 containment, as emanualqa's own gold was
derived). Per product, one run, three ways: without the product; with the customer's product through a customer
rule that filters (``{"product": {"metadata": "product", "use": "filter"}}``, serve/customer.py: the same documents as
``filter={"product": P}`` here, every section being tagged); and through a rule that prefers it (matching hits'
scores x1.5 over 2k hits). nDCG@10 of the served hybrid search each way; for ``--answers`` questions per product
(seeded sample), the served answer asked with ``customer={"product": P}`` (Settings defaults: select mode) and the
"110 words of top 3" extractive baseline over the same hits, token-F1 against the reference, and the share of
answers citing the other product's manual. In-domain caveat: the sentence selector and gap detector were fitted on questions
that include emanualqa's TV tune split (README "Answers"); the filter's effect, not the absolute F1, is what this
measures.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import (BENCH_HOME, REPO, dataset_files, ingest_records, load_questions, publish, ranked_docs,
                           split_of)
from distill.metrics import ranking_metrics, token_f1
from serve.customer import scope_of
from serve.service import KbqaService
from serve.settings import Settings

COLLECTION = "two-products"


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def knowledge_base(data: Path) -> tuple[bytes, dict[str, str]]:
    """JSONL records of both manuals, and the S10 sections' texts by id (to derive the S10 gold)."""
    kb, _ = dataset_files(data, "emanualqa")
    records = []
    for line in kb.read_text().splitlines():
        row = json.loads(line)
        records.append({"id": f"tv/{row['id']}", "title": row["title"], "text": row["text"], "product": "tv"})
    s10 = json.loads((data / "emanualqa" / "s10_manual_corpus.json").read_text())
    texts = {}
    for key, section in s10.items():
        text = "\n".join(line for line in section["text"] if line.strip())
        if text.strip():
            texts[f"phone/{key}"] = text
            records.append({"id": f"phone/{key}", "title": section["title"], "text": text, "product": "phone"})
    return "".join(json.dumps(r) + "\n" for r in records).encode(), texts


def s10_questions(data: Path, texts: dict[str, str]) -> list[dict]:
    import csv

    bags = {key: set(words(text)) for key, text in texts.items()}
    out = []
    with (data / "emanualqa" / "s10_50_questions.csv").open(newline="") as f:
        for row in csv.DictReader(f):
            answer = set(words(row["answer"]))
            if not answer:
                continue
            best = max(bags, key=lambda key: len(answer & bags[key]) / len(answer))
            if len(answer & bags[best]) / len(answer) >= 0.7:
                out.append({"id": f"s10-{row['question_id']}", "question": row["question"], "answer": row["answer"],
                            "gold_ids": [best], "product": "phone"})
    return out


def tv_questions(data: Path) -> list[dict]:
    _, path = dataset_files(data, "emanualqa")
    return [{**q, "gold_ids": [f"tv/{g}" for g in q["gold_ids"]], "product": "tv"} for q in load_questions(path)
            if q.get("gold_ids") and split_of(q["id"]) == "report"]


def first_words(hits, n: int = 110) -> str:
    return " ".join(" ".join(h.chunk.text for h in hits[:3]).split()[:n])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--answers", type=int, default=60, help="questions per product answered (both ways)")
    parser.add_argument("--out", type=Path, default=Path("benchs/results/two_products.md"))
    args = parser.parse_args()
    models = BENCH_HOME / "models"
    if not models.exists():
        BENCH_HOME.mkdir(exist_ok=True)
        models.symlink_to((REPO / ".kbqa" / "models").resolve())
    service = KbqaService.load(Settings(home=BENCH_HOME))
    kb, texts = knowledge_base(args.data)
    collection = ingest_records(service, kb, COLLECTION, COLLECTION)
    questions = {"tv": tv_questions(args.data), "phone": s10_questions(args.data, texts)}
    lines = [f"Two products in one collection ({collection.store.counts()['documents']} sections: TV e-manual and "
             "Galaxy S10 manual), served hybrid search and select-mode answers, one run; each cell: without the "
             "product / the customer's product as a filter rule / as a preference rule.", "",
             "| product | questions | nDCG@10 | answered | token-F1 | 110 words of top 3 | answers citing the other "
             "manual | abstained |", "|---|---|---|---|---|---|---|---|"]
    ways = {"without": {}, "filter": {"product": {"metadata": "product", "use": "filter"}},
            "prefer": {"product": {"metadata": "product", "use": "prefer"}}}
    for product, asked in questions.items():
        customer = {"product": product}
        cells: dict[str, list[float]] = {"nDCG@10": [], "token-F1": [], "110 words": [], "wrong": [], "abstained": []}
        answered = random.Random(0).sample(asked, min(args.answers, len(asked)))
        for rules in ways.values():
            collection.set_customer_rules(rules)
            scope = scope_of(customer, rules)

            def search(question: str, k: int, scope=scope) -> list:
                return scope.search(lambda query, n: collection.search(query, n, filter=scope.filter), question, k)

            cells["nDCG@10"].append(sum(ranking_metrics(ranked_docs(search(q["question"], 40)), set(q["gold_ids"]))
                                        ["nDCG@10"] for q in asked) / len(asked))
            f1 = base = wrong = abstained = 0.0
            for q in answered:
                answer = service.ask(q["question"], 5, COLLECTION, customer=customer)
                f1 += token_f1(answer.answer, q["answer"]) if not answer.abstained else 0.0
                base += token_f1(first_words(search(q["question"], 5)), q["answer"])
                wrong += any(c.metadata.get("product") != product for c in answer.citations)
                abstained += answer.abstained
            n = len(answered)
            for key, value in (("token-F1", f1 / n), ("110 words", base / n), ("wrong", wrong / n),
                               ("abstained", abstained / n)):
                cells[key].append(value)
        collection.set_customer_rules({})

        def show(key: str, percent: bool = False) -> str:
            return " / ".join(f"{v:.1%}" if percent else f"{v:.3f}" for v in cells[key])
        lines.append(f"| {product} | {len(asked)} | {show('nDCG@10')} | {len(answered)} | {show('token-F1')} | "
                     f"{show('110 words')} | {show('wrong', True)} | {show('abstained', True)} |")
        print(lines[-1], flush=True)
    publish(lines, args.out)


if __name__ == "__main__":
    main()
