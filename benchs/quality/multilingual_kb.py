"""A knowledge base partly in Spanish (issue 29): retrieval and gap-protocol abstention for Spanish and English
questions, beside today's English-only pipeline on the same documents.

    python -m benchs.quality.multilingual_kb --data PATH/TO/shared/data

The knowledge base is the covid FAQ with the documents that answer the 60 sampled questions replaced by their
Spanish translation (benchs/builders/translate_questions.py --kb-language es: Qwen2.5-Coder-1.5B, a small model's
machine translation), so each sampled question's answer is in Spanish and the other 150-odd documents stay English:
a help center half-way through its localisation. The questions are the same 60, asked in English and in Spanish.

- today: the English MiniLM whatever the documents' language, as before issue 29 (a service without the
  multilingual encoder; BM25 analyses each language as it now does everywhere);
- kbqa: the collection switches itself to the multilingual encoder at ingest (its documents are not all English);
- kbqa, e5 cosines unmapped: the same, with the selector and gap detector reading e5's cosines as they are, not
  mapped onto MiniLM's scale (retrieval/answering/cosine_scale.py).

Gap protocol: the gold documents of every 4th question removed from a second copy of each collection; an answer
is asked of both in the default (select) mode; gap recall = gap questions refused, false abstention = answerable
questions refused.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import BENCH_HOME, REPO, dataset_files, gap_protocol, ingest_records, load_questions, publish, \
    ranked_docs
from distill.metrics import ranking_metrics
from serve.service import KbqaService
from serve.settings import Settings

TRANSLATED = REPO / "benchs" / "data" / "translated-questions"
UNMAPPED = "kbqa, e5 cosines unmapped"
NAME = "covid_faq_deepset"


def mixed_kb(data: Path, language: str) -> tuple[list[dict], set[str]]:
    """covid's records with the translated ones in place (declaring their language), and the translated ids."""
    kb_path, _ = dataset_files(data, NAME)
    records = [json.loads(line) for line in kb_path.read_text().splitlines() if line.strip()]
    translated = {}
    for row in map(json.loads, (TRANSLATED / f"{NAME}-kb-{language}.jsonl").read_text().splitlines()):
        row.pop("seconds", None)
        if not row["text"]:   # the model put everything on one line: it is all text
            row["title"], row["text"] = "", row["title"]
        translated[row["id"]] = row
    return [translated.get(r["id"], r) for r in records], set(translated)


def jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def both_versions(service, data: Path, records: list[dict], translated_ids: set[str], sampled: list[dict],
                  asked: dict, language: str) -> list[str]:
    """The English originals back beside their translations (ids + "-<language>"): does a question find the version
    in its own language first?"""
    originals = {r["id"]: r for r in map(json.loads, dataset_files(data, NAME)[0].read_text().splitlines())}
    both = [originals[r["id"]] if r["id"] in translated_ids else r for r in records] + \
        [{**r, "id": f"{r['id']}-{language}"} for r in records if r["id"] in translated_ids]
    collection = ingest_records(service, jsonl(both), f"covid-both-{language}", f"covid-both-{language}")
    lines = [f"Both versions of the {len(translated_ids)} documents in one collection ({len(both)} documents; "
             f"encoder {collection.encoder.encoder_id.split('@')[0]}): where the answering document ranks first, in "
             f"which language it is.", "",
             "| question language | n | first in the question's language | first in the other | nDCG@10 (either "
             "version gold) |", "|---|---|---|---|---|"]
    for asked_in in ("en", language):
        own = other = 0
        ndcg = []
        for q in sampled:
            ranked = ranked_docs(collection.search(asked[(q["id"], asked_in)], 40))
            gold = set(q["gold_ids"]) | {f"{g}-{language}" for g in q["gold_ids"]}
            first = next((d for d in ranked if d in gold), None)
            if first is not None:
                in_language = first.endswith(f"-{language}") == (asked_in == language)
                own, other = own + in_language, other + (not in_language)
            ndcg.append(ranking_metrics(ranked, gold)["nDCG@10"])
        lines.append(f"| {asked_in} | {len(sampled)} | {own} | {other} | {statistics.mean(ndcg):.3f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--language", default="es")
    parser.add_argument("--out", type=Path, default=REPO / "benchs" / "results" / "multilingual_kb.md")
    args = parser.parse_args()
    settings = Settings(home=BENCH_HOME, answer_mode="select")
    kbqa = KbqaService.load(settings)
    today = KbqaService(settings, kbqa.encoder, kbqa.pipeline)   # no shipped encoder by name: never switches
    records, translated_ids = mixed_kb(args.data, args.language)
    rows = [json.loads(line) for line in (TRANSLATED / f"{NAME}.jsonl").read_text().splitlines()]
    questions = {q["id"]: q for q in load_questions(dataset_files(args.data, NAME)[1])}
    sampled = [questions[qid] for qid in dict.fromkeys(r["id"] for r in rows if r["language"] == args.language)]
    asked = {(r["id"], "en"): r["question"] for r in rows} | \
        {(r["id"], r["language"]): r["translation"] for r in rows if r["language"] == args.language}
    removed, status = gap_protocol(sampled)
    tag = f"covid-mixed-{args.language}"
    collections = {}
    for system, service in (("today", today), ("kbqa", kbqa)):
        full = ingest_records(service, jsonl(records), tag, f"{tag}-{system}")
        gap = ingest_records(service, jsonl([r for r in records if r["id"] not in removed]), f"{tag}-gap",
                             f"{tag}-{system}-gap")
        collections[system] = (full, gap)
    lines = [f"Knowledge base: {len(records)} covid FAQ documents, {len(translated_ids)} of them translated into "
             f"{args.language} (the gold documents of the {len(sampled)} questions); gap protocol: {len(removed)} "
             f"documents removed, {sum(s == 'gap' for s in status.values())} gap questions.", "",
             "| system | encoder | question language | n | nDCG@10 hybrid | nDCG@10 dense | gap recall | gap false "
             "abstention | false abstention (full KB) |", "|---|---|---|---|---|---|---|---|---|"]
    unmapped = KbqaService(settings, kbqa.encoder, kbqa.pipeline, named_encoder=kbqa.named_encoder)
    unmapped.multilingual_scale = None   # the answer models read e5's cosines as they are (before the cosine scale)
    for system, service in (("today", today), (UNMAPPED, unmapped), ("kbqa", kbqa)):
        full, gap = collections["kbqa" if system == UNMAPPED else system]
        if service is unmapped:   # the same collections, opened by this service
            full, gap = service.collection(full.name), service.collection(gap.name)
        for language in ("en", args.language):
            ndcg = {mode: [] for mode in ("hybrid", "dense")}
            gap_refused, gap_answerable_refused, full_refused = [], [], []
            for q in sampled:
                text = asked[(q["id"], language)]
                for mode in ndcg:
                    hits = full.search(text, 40, mode)
                    ndcg[mode].append(ranking_metrics(ranked_docs(hits), set(q["gold_ids"]))["nDCG@10"])
                full_refused.append(service.ask(text, collection=full.name).abstained)
                if status[q["id"]] == "gap":
                    gap_refused.append(service.ask(text, collection=gap.name).abstained)
                elif status[q["id"]] == "answerable":
                    gap_answerable_refused.append(service.ask(text, collection=gap.name).abstained)
            lines.append(f"| {system} | {full.encoder.encoder_id.split('@')[0]} | {language} | {len(sampled)} | "
                         f"{statistics.mean(ndcg['hybrid']):.3f} | {statistics.mean(ndcg['dense']):.3f} | "
                         f"{statistics.mean(gap_refused):.3f} | {statistics.mean(gap_answerable_refused):.3f} | "
                         f"{statistics.mean(full_refused):.3f} |")
            print(lines[-1], flush=True)
    languages = collections["kbqa"][0].stats()["languages"]
    lines += ["", f"kbqa's collection: documents by language {languages}; encoder chosen at ingest "
              f"{collections['kbqa'][0].encoder.encoder_id}."]
    lines += ["", *both_versions(kbqa, args.data, records, translated_ids, sampled, asked, args.language)]
    publish(lines, args.out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
