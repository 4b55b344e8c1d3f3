"""A multilingual collection distilled (issue 29, 3): the multilingual encoder teaching a copy of itself on the
collection's chunks, as `kbqa distill` now does for a collection it serves; does retrieval move, in English and
across languages?

    python -m benchs.quality.multilingual_distill --data PATH/TO/shared/data [--dataset covid_faq_deepset]

Base: the dataset in a collection served by the multilingual encoder (`kbqa ingest --encoder multilingual`). A copy
of it is distilled the product's way (pseudo-queries of its chunks and the teacher LLM's committed questions,
benchs/data/teacher-questions/; never the set's real questions) and served only if the gate promotes it. Both are
asked the set's sample of report-split questions in English and machine-translated into de, es, fr, ja and zh
(benchs/data/translated-questions/), searched as served (hybrid for English, the encoder alone across languages);
nDCG@10 per language, and the gate's held-out figures. Then the relevance floor as served (e5's 0.84, read through
a distilled encoder's own cosine map, retrieval/answering/cosine_scale.py): the share of these answerable questions
it refuses (no top-5 passage at or above it), and of the other set's sample asked here (off-topic), beside the
distilled encoder read with e5's floor as it is.

``--languages de,es,fr,ja,zh``: a second copy, distilled with the teacher questions also translated into those
languages by the teacher LLM (distill/teacher_translations.py; the cache committed in
benchs/data/teacher-translations/, ``--translate-minutes`` of teacher time for the rest), as `kbqa distill
--languages` does: the cross-lingual distillation route to the cross-language target. The translated questions it
trains on are the teacher's own questions about the chunks, never the set's questions.

``--reuse``: measure the distilled copies a previous run left (a missing one is distilled); one promoted before kbqa
fitted cosine maps gets its map fitted here as `kbqa distill` fits it (distill.run.student_scale), on the
teacher-LLM questions.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import (BENCH_HOME, MAX_QUESTION_WORDS, REPO, TEACHER_QUESTIONS, TEACHER_TRANSLATIONS,
                           dataset_files, load_questions, multilingual_collection, publish, ranked_docs,
                           synthetic_questions, top_cosine)
from distill.config import DistillConfig
from distill.metrics import ranking_metrics
from distill.run import distill_collection, student_scale
from distill.teacher_questions import split_held_out
from retrieval.answering.cosine_scale import COLLECTION_SCALE_META
from retrieval.collection import Collection
from retrieval.encoder import SentenceEncoder, encode_queries
from serve.service import KbqaService
from serve.settings import Settings

TRANSLATED = REPO / "benchs" / "data" / "translated-questions"


def floor_rows(service, base, copies: list[tuple[str, Collection]], asks: list[tuple], other: str) -> list[str]:
    rows = [json.loads(line) for line in (TRANSLATED / f"{other}.jsonl").read_text().splitlines()]
    off_topic = [r["translation"] for r in rows] + list(dict.fromkeys(r["question"] for r in rows))
    answerable = [" ".join(text.split()[:MAX_QUESTION_WORDS]) for _, _, text in asks]
    off_topic = [" ".join(text.split()[:MAX_QUESTION_WORDS]) for text in off_topic]
    rows = [f"Relevance floor on {len(answerable)} answerable questions (all languages) and {len(off_topic)} off-topic "
            f"ones ({other}'s sample, all languages):", "",
            "| encoder | floor | answerable refused | off-topic refused |", "|---|---|---|---|"]
    floor_e5 = service.settings.multilingual_min_relevance
    # Each collection's best cosines once; the relevance gate refuses a question when its best is under the floor.
    tops = {id(c): ([top_cosine(c, t) for t in answerable], [top_cosine(c, t) for t in off_topic])
            for c in [base, *(copy for _, copy in copies)]}
    readings = [("multilingual-e5-small", base, floor_e5)]
    for label, copy in copies:
        readings += [(f"{label}, read with e5's floor as it is", copy, floor_e5),
                     (f"{label}, floor through its own map (served)", copy, service.cosine_reading(copy)[0])]
    for label, collection, floor in readings:
        on, off = (statistics.mean(top < floor for top in group) for group in tops[id(collection)])
        rows.append(f"| {label} | {floor:.3f} | {on:.3f} | {off:.3f} |")
    return rows


def translations_for(copy: Collection, settings: Settings, languages: list[str], minutes: float) -> tuple[list, str]:
    """The copy's teacher questions translated into ``languages`` the product's way (distill/teacher_translations.py),
    starting from the cache committed in benchs/data/teacher-translations/; ``minutes`` of teacher time for those
    not cached (0: the cache only, no teacher started)."""
    from distill.teacher_questions import Budget, QuestionCache
    from distill.teacher_translations import translate_questions
    from serve.wiring import teacher_llm

    cache = QuestionCache(copy.directory / "teacher-translations.sqlite")
    try:
        with teacher_llm(settings) as teacher:
            translated, report = translate_questions(synthetic_questions(copy), languages, teacher, cache,
                                                     Budget(max_seconds=minutes * 60), show_progress=True)
    finally:
        cache.close()
    drops = ", ".join(f"{reason} {n}" for reason, n in report.dropped.items()) or "none"
    return translated, (f"{report.questions} teacher questions translated into {', '.join(languages)}: {report.kept} "
                        f"kept (dropped: {drops}), {report.skipped_by_time} not translated for time")


def distilled_copy(service, settings: Settings, base: Collection, suffix: str, languages: list[str] | None,
                   reuse: bool, translate_minutes: float, refit_map: bool = False) -> tuple[Collection, list[str]]:
    """A copy of ``base`` distilled the product's way (with the teacher questions translated into ``languages``
    when given), or the one a previous run left (``reuse``); the notes on how it was made."""
    name = base.name.removesuffix("-multilingual")
    copy_dir = base.directory.with_name(base.directory.name + suffix)
    fresh = not (reuse and (copy_dir / "store.sqlite").exists())
    if fresh:
        shutil.rmtree(copy_dir, ignore_errors=True)
        shutil.copytree(base.directory, copy_dir, ignore=shutil.ignore_patterns("encoders", "teacher_cache.sqlite",
                                                                                "teacher-*.sqlite"))
        for committed, kept_as in ((TEACHER_QUESTIONS, "teacher-questions"), (TEACHER_TRANSLATIONS,
                                                                               "teacher-translations")):
            # The same chunks as the English collection's: the committed teacher questions and translations apply.
            source = committed / f"{name.replace('_', '-')}.sqlite"
            if source.exists():
                shutil.copyfile(source, copy_dir / f"{kept_as}.sqlite")
    copy = Collection(copy_dir, service.encoder, encoder_loader=SentenceEncoder, named_encoder=service.named_encoder)
    copy.refresh()   # serving what its store says (a promoted copy: its own encoder), before it is read
    if not fresh:
        refit = copy.encoder_dir is not None and (copy.cosine_scale() is None or refit_map)
        return copy, [f"The copy `{copy_dir.name}` left by a previous run, measured as it is."
                      + (f" {map_fitted_now(copy, base)}" if refit else ""), ""]
    notes, translated = [], []
    if languages:
        translated, note = translations_for(copy, settings, languages, translate_minutes)
        notes.append(note + ".")
    start = time.perf_counter()
    report = distill_collection(copy, settings.kbqa_home.models_dir, DistillConfig(full=True), show_progress=True,
                                synthetic_questions=synthetic_questions(copy), translated_questions=translated)
    gate = {"pseudo-queries": (report.serving, report.student),
            "synthetic questions": (report.serving_synthetic, report.student_synthetic),
            "translated questions": (report.serving_translated, report.student_translated)}
    notes += [f"`{copy_dir.name}`: {report.reason}; {report.triples} triples, {report.synthetic_questions} teacher-LLM "
              f"questions ({report.synthetic_held_out} held out), {report.translated_questions} translations of them "
              f"({report.translated_held_out} held out), {time.perf_counter() - start:.0f} s; promoted: "
              f"{report.promoted}.", "",
              "Held-out figures the gate read (MRR@10, serving -> student): " + "; ".join(
                  f"{kind} {serving['mrr@10']:.3f} -> {student['mrr@10']:.3f}"
                  for kind, (serving, student) in gate.items() if serving) + ".", ""]
    print(report.reason, flush=True)
    return copy, notes


def map_fitted_now(copy: Collection, base: Collection) -> str:
    """A copy's cosine map fitted again as `kbqa distill` fits it, on its held-out English teacher questions (a copy
    promoted before kbqa fitted maps, or with ``--refit-map`` one fitted another way); the held-out pseudo-queries
    distillation also reads are left out."""
    questions = [q.question for q in split_held_out(synthetic_questions(copy))[1]]
    chunk_ids = [c.chunk_id for c in copy.store.all_chunks()]
    stored = [c.store.vectors_for(chunk_ids) for c in (copy, base)]
    vectors = [np.stack([by_id[i] for i in chunk_ids]) for by_id in stored]
    scale = student_scale(([encode_queries(copy.encoder, questions)], vectors[0]),
                          ([encode_queries(base.encoder, questions)], vectors[1]), None)
    with copy.store.transaction():
        copy.store.set_meta(COLLECTION_SCALE_META, json.dumps({"encoder": copy.encoder.encoder_id,
                                                               "scale": scale.to_dict()}))
    return (f"Its cosine map fitted now on its {len(questions)} held-out English teacher-LLM questions "
            "(distill.run.student_scale).")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--dataset", default="covid_faq_deepset")
    parser.add_argument("--other", default=None, help="the set whose sample is asked as off-topic questions")
    parser.add_argument("--reuse", action="store_true", help="measure the distilled copies a previous run left")
    parser.add_argument("--languages", help="also a copy distilled with the teacher questions translated into these "
                                            "(codes: de,es,fr,ja,zh)")
    parser.add_argument("--refit-map", action="store_true",
                        help="with --reuse: fit the copies' cosine maps again, on their English teacher questions")
    parser.add_argument("--translate-minutes", type=float, default=0.0,
                        help="teacher time for translations not in the committed cache")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    name = args.dataset
    other = args.other or ("emanualqa" if name != "emanualqa" else "covid_faq_deepset")
    settings = Settings(home=BENCH_HOME)
    service = KbqaService.load(settings, with_generator=False)
    base = multilingual_collection(service, args.data, name)
    systems = [("after `kbqa distill`", "-distilled", None)]
    if args.languages:
        systems.append(("after `kbqa distill` with translated teacher questions", "-distilled-translated",
                        args.languages.split(",")))
    notes, copies = [], []
    for label, suffix, languages in systems:
        copy, made = distilled_copy(service, settings, base, suffix, languages, args.reuse, args.translate_minutes,
                                    args.refit_map)
        copies.append((label, copy))
        notes += made

    rows = [json.loads(line) for line in (TRANSLATED / f"{name}.jsonl").read_text().splitlines()]
    gold = {q["id"]: set(q["gold_ids"]) for q in load_questions(dataset_files(args.data, name)[1])}
    asks = [(qid, "en", text) for qid, text in {r["id"]: r["question"] for r in rows}.items()] + \
        [(r["id"], r["language"], r["translation"]) for r in rows]
    scores: dict = defaultdict(list)
    for system, collection in [("multilingual-e5-small", base), *copies]:
        for qid, language, text in asks:
            hits = collection.search(" ".join(text.split()[:MAX_QUESTION_WORDS]), 40)
            scores[(system, language)].append(ranking_metrics(ranked_docs(hits), gold[qid])["nDCG@10"])
    languages = ["en"] + sorted({language for _, language in scores} - {"en"})
    systems = list(dict.fromkeys(system for system, _ in scores))
    lines = [f"{name}, served by the multilingual encoder, before and after `kbqa distill` (one run).", "", *notes,
             "nDCG@10 on the report-split sample (translations: the teacher LLM's machine translation), as served; "
             "in brackets, the share of the system's own English figure:", "",
             "| system | " + " | ".join(f"{language} (n={len(scores[(systems[0], language)])})"
                                      for language in languages) + " | mean of the translations |",
             "|---|" + "---|" * (len(languages) + 1)]
    for system in systems:
        cells = [statistics.mean(scores[(system, language)]) for language in languages]
        lines.append(f"| {system} | {cells[0]:.3f} | " + " | ".join(f"{c:.3f} ({c / cells[0]:.0%})" for c in cells[1:])
                     + f" | {statistics.mean(cells[1:]):.3f} |")
    lines += ["", *floor_rows(service, base, copies, asks, other), ""]
    for _, copy in copies:
        copy.close()
    publish(lines, args.out or REPO / "benchs" / "results" / f"multilingual_distill_{name}.md")


if __name__ == "__main__":
    main()
