"""`kbqa distill`: teacher -> student on a collection's own chunks, promoted only if it beats the serving encoder.

Nothing the server reads changes until ``Collection.promote`` commits: the student is trained and
saved under ``encoders/.staging-*`` and renamed to ``encoders/vNNNN`` first, so Ctrl-C or a kill at
any point leaves the serving encoder and index as they were.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from distill.config import DistillConfig
from distill.fusion_fit import fit_dense_weight
from distill.logged_questions import MIN_FOR_VALIDATION, teacher_labelled, usable_questions
from distill.metrics import chunk_retrieval_metrics
from distill.mining import mine_triples
from distill.pseudo_queries import PseudoQuery, make_pseudo_queries, split_holdout
from distill.teacher_cache import TeacherCache
from distill.teacher_questions import split_held_out
from distill.trainer import train_student
from retrieval.answering.cosine_scale import COLLECTION_SCALE_META, CosineScale
from retrieval.collection import Collection
from retrieval.e5_port import PROMPTS_FILE
from retrieval.encoder import SentenceEncoder, encode_queries, pick_device
from retrieval.models import MULTILINGUAL, STUDENT_START, TEACHER, model_path
from retrieval.model_store import prune_versions, publish_version


LOGGED_SEEN = "logged_questions_trained"   # store meta: how many logged questions the serving encoder learnt from


@dataclass
class DistillReport:
    collection: str
    mode: str                       # full | incremental | up to date
    version: str | None = None
    promoted: bool = False
    reason: str = ""
    chunks_total: int = 0
    chunks_new: int = 0
    chunks_trained_on: int = 0
    pseudo_queries: int = 0
    held_out: int = 0
    triples: int = 0
    teacher_texts_encoded: int = 0
    serving: dict = field(default_factory=dict)
    student: dict = field(default_factory=dict)
    logged_questions: int = 0       # customers' questions trained on or held out
    logged_held_out: int = 0
    serving_logged: dict = field(default_factory=dict)
    student_logged: dict = field(default_factory=dict)
    synthetic: dict = field(default_factory=dict)   # the teacher LLM's run: written, kept, dropped (QuestionReport)
    synthetic_questions: int = 0    # kept synthetic questions of the trained chunks: trained on or held out
    synthetic_held_out: int = 0
    serving_synthetic: dict = field(default_factory=dict)
    student_synthetic: dict = field(default_factory=dict)
    translations: dict = field(default_factory=dict)   # the teacher LLM's translations of them (TranslationReport)
    translated_questions: int = 0   # translations of the trained chunks' synthetic questions: trained on or held out
    translated_held_out: int = 0
    serving_translated: dict = field(default_factory=dict)
    student_translated: dict = field(default_factory=dict)
    fusion: dict = field(default_factory=dict)   # the hybrid weight fitted on held-out synthetic questions (FusionFit)
    seconds: dict = field(default_factory=dict)
    device: str = "cpu"

    def to_dict(self) -> dict:
        return asdict(self)


def freshness(collection: Collection) -> dict:
    """How much of the collection the serving encoder has not been trained on."""
    collection.refresh()
    chunk_ids = [c.chunk_id for c in collection.store.all_chunks()]
    distilled = collection.store.distilled_ids()
    newer = sum(1 for c in chunk_ids if c not in distilled)
    return {"collection": collection.name, "chunks": len(chunk_ids), "chunks_newer_than_encoder": newer,
            "share_newer": round(newer / len(chunk_ids), 4) if chunk_ids else 0.0,
            "encoder": collection.encoder.encoder_id, "hybrid_dense_weight": collection.dense_weight,
            "encoder_dir": str(collection.encoder_dir) if collection.encoder_dir else None,
            "languages": collection.store.languages(), "question_languages": collection.question_languages}


KEEP_STUDENTS = 2   # unpromoted students kept on disk besides the serving one


def top_cosines(query_sets: list[np.ndarray], passages: np.ndarray, k: int = 3) -> list[float]:
    """The ``k`` best cosines of every question (prompt passages' cosines, as the relevance floor reads them)."""
    return [float(x) for queries in query_sets for x in np.sort(queries @ passages.T, axis=1)[:, -k:].ravel()]


def student_scale(student: tuple[list[np.ndarray], np.ndarray], serving: tuple[list[np.ndarray], np.ndarray],
                  previous: CosineScale | None) -> CosineScale:
    """A multilingual student's cosines onto the shipped e5's scale (retrieval/answering/cosine_scale.py): the same
    questions' top cosines under the student and under the serving encoder, (query vectors, passage vectors) each,
    matched quantile to quantile; composed with the serving encoder's own map when it is a distilled one."""
    scale = CosineScale.fit(top_cosines(*student), top_cosines(*serving))
    return scale.then(previous) if previous is not None else scale


def split_translations(translations: list, synthetic: list[PseudoQuery], synthetic_held: list[PseudoQuery],
                       doc_of: dict[str, str]) -> tuple[list[tuple[PseudoQuery, str]], list[PseudoQuery]]:
    """(trained on: (translated query, its source question), held out): translations follow their source question's
    side of the synthetic split, so no student is judged on a question it learnt in another language; those of
    questions outside this run (chunks not trained on) are left out."""
    trained, held = {q.text for q in synthetic}, {q.text for q in synthetic_held}
    train, held_out = [], []
    for t in translations:
        query = PseudoQuery(t.question, t.chunk_id, doc_of.get(t.chunk_id, ""), "translated")
        if t.source in held:
            held_out.append(query)
        elif t.source in trained:
            train.append((query, t.source))
    return train, held_out


def distill_collection(collection: Collection, models_dir: Path, config: DistillConfig | None = None,
                       device: str | None = None, show_progress: bool = False,
                       on_stage: Callable[[str], None] | None = None,
                       logged_questions: list[str] | None = None,
                       synthetic_questions: list | None = None,
                       translated_questions: list | None = None) -> DistillReport:
    """``on_stage`` hears each step's name as it starts (the API's job progress). ``logged_questions``: what
    customers asked (the answer log): scrubbed, teacher-labelled and trained on beside the pseudo-queries; with at
    least MIN_FOR_VALIDATION of them, a share is held out and decides promotion beside the held-out pseudo-queries.
    ``synthetic_questions``: the teacher LLM's (distill/teacher_questions.SyntheticQuestion), trained on with their
    source chunk as the positive; with at least MIN_FOR_VALIDATION, a share is held out and weighs in promotion too.
    ``translated_questions``: the teacher LLM's translations of those (distill/teacher_translations.py); the student
    learns to read each as the teacher reads its original (the teacher's vector of the source question mines the
    negative and scores the margins). A translation is held out when its source is, and weighs in promotion too."""
    from sentence_transformers import SentenceTransformer

    stage = on_stage or (lambda name: None)

    config = config or DistillConfig()
    device = device or pick_device()
    clock = {"start": time.perf_counter()}
    collection.refresh()
    chunks = collection.store.all_chunks()
    if not chunks:
        raise ValueError(f"collection {collection.name!r} is empty: run `kbqa ingest PATH --collection {collection.name}` first")
    # mpnet and MiniLM read English only: a multilingual collection is distilled from the multilingual encoder into
    # a copy of itself (no larger multilingual teacher is bundled), adapting it to the collection's own chunks.
    multilingual = collection.encoder_model == MULTILINGUAL
    teacher_model, student_model = (MULTILINGUAL, MULTILINGUAL) if multilingual else (TEACHER, STUDENT_START)
    current = collection.encoder_dir
    incremental = current is not None and not config.full
    distilled = collection.store.distilled_ids()
    new = [c for c in chunks if c.chunk_id not in distilled]
    report = DistillReport(collection.name, "incremental" if incremental else "full", chunks_total=len(chunks),
                           chunks_new=len(new), device=device)
    logged = usable_questions(logged_questions or [])
    # Questions customers asked since the last promotion are news too, even when no chunk changed.
    logged_seen = int(collection.store.get_meta(LOGGED_SEEN) or 0)
    if incremental and not new and len(logged) <= logged_seen:
        report.mode, report.reason = "up to date", "every chunk and logged question was already seen by the serving encoder"
        return report
    train_chunks = chunks
    if incremental:  # new and changed chunks, plus a replay sample so old topics are not forgotten
        old = [c for c in chunks if c.chunk_id in distilled]
        replay = random.Random(config.seed).sample(old, min(len(old), max(config.replay_min, int(config.replay_ratio * len(new)))))
        train_chunks = new + replay
    report.chunks_trained_on = len(train_chunks)
    if incremental:  # new chunks plus replay are seen once: repeating them would cost what a full run costs
        config = dataclasses.replace(config, max_epochs=1)

    queries = make_pseudo_queries(train_chunks, config.sentences_per_chunk, config.seed)
    clock["questions"] = time.perf_counter()
    train_queries, held_out = split_holdout(queries, config.holdout_ratio, config.seed)
    report.pseudo_queries, report.held_out = len(queries), len(held_out)
    trained_ids, doc_of = {c.chunk_id for c in train_chunks}, {c.chunk_id: c.doc_id for c in chunks}
    synthetic = [PseudoQuery(q.question, q.chunk_id, doc_of[q.chunk_id], "synthetic")
                 for q in synthetic_questions or [] if q.chunk_id in trained_ids]
    synthetic_held: list[PseudoQuery] = []
    if len(synthetic) >= MIN_FOR_VALIDATION:
        synthetic, synthetic_held = split_held_out(synthetic, config.holdout_ratio, text=lambda q: q.text)
    train_queries = train_queries + synthetic   # mined and trained like the pseudo-queries: hard negatives, margins
    report.synthetic_questions, report.synthetic_held_out = len(synthetic) + len(synthetic_held), len(synthetic_held)
    translated, translated_held = split_translations(translated_questions or [], synthetic, synthetic_held, doc_of)
    report.translated_questions = len(translated) + len(translated_held)
    report.translated_held_out = len(translated_held)
    # The teacher encoder reads every query in its own words, a translation in its source's: cross-lingual targets.
    teacher_texts = [q.text for q in train_queries] + [source for _, source in translated]
    train_queries = train_queries + [query for query, _ in translated]
    passages = [c.embedding_text() for c in chunks]
    ids, docs = [c.chunk_id for c in chunks], [c.doc_id for c in chunks]
    position = {cid: i for i, cid in enumerate(ids)}

    stage("teacher")
    teacher = SentenceEncoder(model_path(models_dir, teacher_model), device=device)
    cache = TeacherCache(collection.directory / "teacher_cache.sqlite", teacher)
    try:
        teacher_passages = cache.encode(passages, show_progress=show_progress)
        teacher_queries = cache.encode(teacher_texts, show_progress=show_progress, queries=True)
        teacher_logged = cache.encode(logged, show_progress=show_progress, queries=True) if logged else None
        report.teacher_texts_encoded = cache.encoded
    finally:
        cache.close()
    del teacher
    clock["teacher"] = time.perf_counter()

    logged_train, logged_held = [], []
    if logged:
        labelled = teacher_labelled(logged, teacher_logged, teacher_passages, ids, docs)
        if len(labelled) >= MIN_FOR_VALIDATION:
            logged_train, logged_held = split_holdout(labelled, config.logged_holdout_ratio, config.seed)
        else:
            logged_train = labelled
        report.logged_questions, report.logged_held_out = len(labelled), len(logged_held)

    stage("mining")
    triples = mine_triples(train_queries, teacher_queries, teacher_passages, ids, docs,
                           config.negatives_from_rank, config.negatives_to_rank, config.seed)
    logged_triples = []
    if logged_train:
        kept = [logged.index(q.text) for q in logged_train]
        logged_triples = mine_triples(logged_train, teacher_logged[kept], teacher_passages, ids, docs,
                                      config.negatives_from_rank, config.negatives_to_rank, config.seed)
    report.triples = len(triples) + len(logged_triples)
    # MiniLM: a layer-pruned teacher was measured worse and slower (README), so it is not offered.
    start = Path(current) if incremental else model_path(models_dir, student_model)
    start_dir = str(current) if incremental else (student_model if multilingual else "minilm")
    student = SentenceTransformer(str(start), device=device, local_files_only=True)
    prompts = json.loads((start / PROMPTS_FILE).read_text()) if (start / PROMPTS_FILE).is_file() else {}
    stage("training")
    losses = train_student(student, triples, passages, config, device, show_progress, always=logged_triples,
                           prompts=prompts)
    clock["train"] = time.perf_counter()

    # Save a versioned student (config and metrics beside it), whatever the verdict.
    encoders = collection.directory / "encoders"
    encoders.mkdir(exist_ok=True)
    staging = encoders / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    student.save(str(staging))
    del student
    if prompts:   # the student reads questions and passages with the prefixes it started with
        (staging / PROMPTS_FILE).write_text(json.dumps(prompts))
    (staging / "distill_config.json").write_text(json.dumps(
        {**config.to_dict(), "started_from": str(start_dir), "device": device}, indent=1))
    version = publish_version(encoders, staging, f"kbqa distill of collection {collection.name}")
    final = encoders / version
    report.version = version

    stage("evaluating")
    # Decide on held-out pseudo-queries: the serving encoder's stored vectors vs the student's.
    candidate = SentenceEncoder(final, device=device)
    gold = [position[q.chunk_id] for q in held_out]
    held_texts = [q.text for q in held_out]
    stored = collection.store.vectors_for(ids)
    serving_passages = np.stack([stored[c] for c in ids])
    asked = {"serving": [encode_queries(collection.encoder, held_texts)], "student": [encode_queries(candidate, held_texts)]}
    report.serving = chunk_retrieval_metrics(asked["serving"][0], serving_passages, gold)
    student_passages = candidate.encode(passages, show_progress=show_progress)
    report.student = chunk_retrieval_metrics(asked["student"][0], student_passages, gold)
    student_score, serving_score = report.student["mrr@10"], report.serving["mrr@10"]
    on_what = f"{len(gold)} held-out pseudo-queries"
    if logged_held:
        # Customers' questions (teacher-labelled) weigh as much as the pseudo-queries in the decision.
        logged_gold, logged_texts = [position[q.chunk_id] for q in logged_held], [q.text for q in logged_held]
        report.serving_logged = chunk_retrieval_metrics(encode_queries(collection.encoder, logged_texts),
                                                        serving_passages, logged_gold)
        report.student_logged = chunk_retrieval_metrics(encode_queries(candidate, logged_texts), student_passages,
                                                        logged_gold)
    student_scores, serving_scores = [student_score], [serving_score]
    if logged_held:
        student_scores.append(report.student_logged["mrr@10"])
        serving_scores.append(report.serving_logged["mrr@10"])
        on_what += f", {len(logged_held)} held-out logged questions"
    def weigh(held: list[PseudoQuery]) -> tuple[dict, dict]:
        """(serving, student) figures on one more kind of held-out question, which weighs in the decision."""
        gold_of, texts = [position[q.chunk_id] for q in held], [q.text for q in held]
        asked["serving"].append(encode_queries(collection.encoder, texts))
        asked["student"].append(encode_queries(candidate, texts))
        figures = (chunk_retrieval_metrics(asked["serving"][-1], serving_passages, gold_of),
                   chunk_retrieval_metrics(asked["student"][-1], student_passages, gold_of))
        serving_scores.append(figures[0]["mrr@10"])
        student_scores.append(figures[1]["mrr@10"])
        return figures

    if synthetic_held:
        report.serving_synthetic, report.student_synthetic = weigh(synthetic_held)
        on_what += f", {len(synthetic_held)} held-out synthetic questions"
    if translated_held:
        report.serving_translated, report.student_translated = weigh(translated_held)
        on_what += f", {len(translated_held)} held-out translated questions"
    if len(student_scores) > 1:   # each kind of held-out question weighs the same in the decision
        student_score, serving_score = float(np.mean(student_scores)), float(np.mean(serving_scores))
        on_what += " (mean)"
    clock["evaluate"] = time.perf_counter()

    if student_score > serving_score:
        stage("promoting")
        meta = {}
        if multilingual:   # the student's cosines onto the shipped e5's scale, which the floor and cosine map read
            # Fitted on the held-out questions in the collection's own words: e5's floor was calibrated on English
            # questions, and matching the translated ones' quantiles too would hand back e5's low cosines for them
            # (emanualqa: 36% of translated answerable questions refused against 22% when fitted without them).
            english = len(asked["student"]) - (1 if translated_held else 0)
            scale = student_scale((asked["student"][:english], student_passages),
                                  (asked["serving"][:english], serving_passages), collection.cosine_scale())
            meta[COLLECTION_SCALE_META] = json.dumps({"encoder": candidate.encoder_id, "scale": scale.to_dict()})
        collection.promote(candidate, final, dict(zip(ids, student_passages)), trained_on=ids, meta=meta)
        collection.store.set_meta(LOGGED_SEEN, str(len(logged)))
        report.promoted = True
        report.reason = f"student MRR@10 {student_score:.3f} > serving {serving_score:.3f} on {on_what}"
    else:
        report.reason = (f"kept {collection.encoder.encoder_id}: student MRR@10 {student_score:.3f} "
                         f"<= serving {serving_score:.3f} on {on_what}")
    if synthetic_held:   # for whichever encoder serves now: neither was trained on these questions
        stage("fitting fusion")
        report.fusion = fit_dense_weight(collection, synthetic_held).to_dict()
    clock["end"] = time.perf_counter()
    report.seconds = {"questions": round(clock["questions"] - clock["start"], 1),
                      "teacher": round(clock["teacher"] - clock["questions"], 1),
                      "train": round(clock["train"] - clock["teacher"], 1),
                      "evaluate": round(clock["evaluate"] - clock["train"], 1),
                      "total": round(clock["end"] - clock["start"], 1)}
    (final / "metrics.json").write_text(json.dumps({**report.to_dict(), "loss_first_last": [losses[0], losses[-1]] if losses else []}, indent=1))
    # Each student is ~90 MB: keep the serving one and the newest KEEP_STUDENTS (for comparison), drop the rest.
    serving = collection.encoder_dir
    prune_versions(encoders, keep={serving.name} if serving else set(), keep_last=KEEP_STUDENTS)
    return report
