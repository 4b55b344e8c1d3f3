"""The one helper module the benchmark scripts share (no script imports another): the dev sets in their normalised
format, collections built the product's way, the cached retrieval rows of the answer benchmarks and the
knowledge-gap protocol, the served product, and ``publish``, which heads every result file with the command, the
commit and the CPU that produced it.

Run every script from the repository root as a module: ``python -m benchs.quality.answer_trust --data ...``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from ingest.records import Chunk
from retrieval.answering.engines.cpu import describe
from retrieval.answering.engines.llama_server import free_port, wait_until_up
from retrieval.search import SearchHit

os.environ.setdefault("HF_HUB_OFFLINE", "1")   # weights only from the prepared folders, as `kbqa` itself
REPO = Path(__file__).resolve().parents[1]
BENCH_HOME = REPO / ".kbqa-bench"
RESULTS = REPO / "benchs" / "results"
# The dev sets: retrieval is measured on all four; the answer benchmarks and the data builders use the three with
# reference answers and a licence to ship what is built from them (plausible_docs is kb/ itself).
RETRIEVAL_DATASETS = ("emanualqa", "covid_faq_deepset", "techqa_dev", "plausible_docs")
ANSWER_DATASETS = ("emanualqa", "covid_faq_deepset", "techqa_dev")
HITS = 5
MAX_QUESTION_WORDS = 120   # long TechQA questions are cut to this many words before they are asked

# Questions of the demo knowledge base (kb/) for the speed benchmarks, and ones it cannot answer.
ON_TOPIC = [
    "How do I cancel my subscription?", "Does Plausible use cookies?", "How do I enable two-factor authentication?",
    "How can I exclude my own visits from the stats?", "How do I add a new website?",
    "Can I import my Google Analytics data?", "How do I track file downloads?", "How do I change my email address?",
    "How are unique visitors counted?", "How do I set up a proxy with Cloudflare?",
    "Can I share my dashboard publicly?", "How do I download my invoices?",
]
OFF_TOPIC = ["What is the boiling point of mercury in kelvin?", "Who won the 1998 football world cup?",
             "Give me a recipe for banana bread."]


# --- result files -------------------------------------------------------------------------------------------------

def command_line() -> str:
    """How this run was started, as a user would type it again."""
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    start = f"python -m {spec.name}" if spec is not None and spec.name else f"python {sys.argv[0]}"
    # The dev sets' folder is written the way the docs write it: nothing kept in the repo names the sibling checkout.
    args = ["PATH/TO/shared/data" if Path(arg).as_posix().rstrip("/").endswith("shared/data") else arg
            for arg in sys.argv[1:]]
    return " ".join([start, *map(shlex.quote, args)])


def commit() -> str:
    """The commit the run used, "+changes" when the work tree differed from it."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()
    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (" +changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def result_header() -> list[str]:
    return [f"Command: `{command_line()}`", f"Commit: {commit()}", f"CPU: {describe()}", ""]


def publish(lines: list[str], out: Path) -> None:
    """Write a benchmark's report (kept in the repo, benchs/results/), headed by the command, commit and CPU, and
    print it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(result_header() + lines) + "\n"
    out.write_text(text)
    print(text, end="")


def publish_json(report: dict, out: Path) -> None:
    """A JSON result, its first keys the command, commit and CPU."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": command_line(), "commit": commit(), "cpu": describe(), **report},
                              indent=1) + "\n")


# --- dev sets and collections -------------------------------------------------------------------------------------
def dataset_files(data: Path, name: str) -> tuple[Path, Path]:
    folder = data / name / "normalized"
    if not folder.is_dir():
        folder = data / name  # techqa_dev keeps kb.jsonl/questions.jsonl at its top level
    return folder / "kb.jsonl", folder / "questions.jsonl"


def load_questions(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def split_of(question_id: str) -> str:
    """A fixed half/half split by id hash: tune on one half, report on the other."""
    return "tune" if int(hashlib.sha256(question_id.encode()).hexdigest(), 16) % 2 == 0 else "report"


def open_collection(service, data: Path, name: str):
    """Ingest a dataset's kb.jsonl into its own collection (incremental: reruns embed nothing)."""
    kb, _ = dataset_files(data, name)
    return ingest_records(service, kb.read_bytes(), name, name.replace("_", "-"))


def ingest_records(service, kb: bytes, staged_name: str, collection: str):
    """Stage ``kb`` (JSONL records) as sources/<staged_name>/kb.jsonl and ingest it into ``collection``; the staged
    file is rewritten only when it changed, so reruns embed nothing."""
    staged = BENCH_HOME / "sources" / staged_name
    staged.mkdir(parents=True, exist_ok=True)
    if not (staged / "kb.jsonl").exists() or (staged / "kb.jsonl").read_bytes() != kb:
        (staged / "kb.jsonl").write_bytes(kb)
    report = service.ingest(staged, collection=collection, show_progress=True)
    if report.errors:
        raise RuntimeError(f"{collection}: {report.errors}")
    return service.collection(collection)


def multilingual_collection(service, data: Path, name: str):
    """The dataset's kb.jsonl in a collection served by the multilingual encoder (`kbqa ingest --encoder
    multilingual`): ``<dataset>-multilingual``."""
    from retrieval.models import MULTILINGUAL

    kb, _ = dataset_files(data, name)
    collection_name = name.replace("_", "-") + "-multilingual"
    service.collection(collection_name, create=True).use_shipped_encoder(MULTILINGUAL, show_progress=True)
    return ingest_records(service, kb.read_bytes(), name, collection_name)


TEACHER_QUESTIONS = REPO / "benchs" / "data" / "teacher-questions"
TEACHER_TRANSLATIONS = REPO / "benchs" / "data" / "teacher-translations"   # their translations (issue 29)


def teacher_cache_path(directory: Path) -> Path:
    """The bench collection's teacher-question cache, first copied from benchs/data/teacher-questions/ if it has none."""
    path = directory / "teacher-questions.sqlite"
    committed = TEACHER_QUESTIONS / f"{directory.name}.sqlite"
    if not path.exists() and committed.exists():
        shutil.copyfile(committed, path)
    return path


def synthetic_questions(collection) -> list:
    """The teacher LLM's kept questions for the collection's current chunks, from its cache (`kbqa
    teacher-questions --collection NAME` with KBQA_HOME=.kbqa-bench fills it). A bench collection without a cache
    starts from the one committed in benchs/data/teacher-questions/ (the 1.5B teacher took 50 min per 200 chunks here)."""
    from distill.teacher_questions import QuestionCache, cached_questions

    cache = QuestionCache(teacher_cache_path(collection.directory))
    try:
        return cached_questions(collection.store.all_chunks(), cache)
    finally:
        cache.close()


def top_cosine(collection, question: str) -> float:
    """The best cosine among the top-5 hits: what the relevance gate compares with its floor (-1: no dense score)."""
    hits = collection.search(question, 5)
    return max((h.dense_score for h in hits if h.dense_score is not None), default=-1.0)


def ranked_docs(hits, depth: int = 10) -> list[str]:
    """A document ranks where its best chunk ranks."""
    seen: list[str] = []
    for hit in hits:
        if hit.chunk.doc_id not in seen:
            seen.append(hit.chunk.doc_id)
    return seen[:depth]


def mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]} if rows else {}



# --- the answer benchmarks' retrieval rows ------------------------------------------------------------------
# Retrieval rows for the answer benchmarks: every question of every dev set, its top hits, on the full knowledge
# base and on the knowledge-gap version of it. Cached, so the answer systems are compared on the same retrieval.
#
# The knowledge-gap protocol: in file order, the gold documents of every 4th question are removed from the knowledge
# base (collection ``<set>-gap``). A question whose gold documents are all gone is a *gap* question (it should be
# refused); one that lost only some is dropped; the rest stay answerable.

def is_answerable(question: dict) -> bool:
    return bool(question.get("answerable", True) and question.get("gold_ids"))


def gap_protocol(questions: list[dict]) -> tuple[set[str], dict[str, str]]:
    """(removed document ids, question id -> "gap" | "answerable" | "dropped") for answerable questions."""
    answerable = [q for q in questions if is_answerable(q)]
    removed = {d for i, q in enumerate(answerable) if i % 4 == 3 for d in q["gold_ids"]}
    status = {}
    for q in answerable:
        lost = set(q["gold_ids"]) & removed
        status[q["id"]] = "answerable" if not lost else "gap" if lost == set(q["gold_ids"]) else "dropped"
    return removed, status


def _hit(h) -> dict:
    c = h.chunk
    return {"doc_id": c.doc_id, "chunk_id": c.chunk_id, "title": c.title, "heading": c.heading,
            "context": c.context, "text": c.text, "score": h.score, "dense": h.dense_score}


def retrieval_rows(service, data: Path, name: str, split: str) -> list[dict]:
    """One row per question of the split: its hits on the full KB, and (gap protocol) on the gap KB."""
    cache = BENCH_HOME / "answer-rows" / f"{name}-{split}.jsonl"
    if cache.exists():
        return [json.loads(line) for line in cache.read_text().splitlines()]
    kb_path, questions_path = dataset_files(data, name)
    questions = load_questions(questions_path)
    kb_rows = [line + "\n" for line in kb_path.read_text().splitlines() if line.strip()]
    removed, status = gap_protocol(questions)
    full = open_collection(service, data, name)   # the same collection the other answer benchmarks use
    gap_name = name.replace("_", "-") + "-gap"
    gap = ingest_records(service, "".join(r for r in kb_rows if json.loads(r)["id"] not in removed).encode(),
                         gap_name, gap_name)
    rows = []
    for q in questions:
        if split_of(q["id"]) != split:
            continue
        rows.append({"id": q["id"], "dataset": name, "question": q["question"], "reference": q.get("answer") or "",
                     "gold_ids": q.get("gold_ids") or [], "answerable": is_answerable(q),
                     "gap_status": status.get(q["id"], "unanswerable"),
                     "hits": [_hit(h) for h in full.search(q["question"], HITS)],
                     "gap_hits": [_hit(h) for h in gap.search(q["question"], HITS)]})
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    shutil.move(tmp, cache)
    return rows


def write_rows(out: Path, rows: list[dict], counts: Counter, noun: str) -> None:
    """A data builder's file (one JSON object a line), and what went into it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for key, value in sorted(counts.items()):
        print(f"{key}: {value}")
    print(f"{len(rows)} {noun} -> {out}")


def passage_of(chunk) -> dict:
    return {"title": chunk.context, "text": chunk.text}


def tune_questions(service, data: Path):
    """(dataset, its collection, chunks by document, question record, question text cut to size, gold ids)
    for every tune-split question of the answer sets."""
    for name in ANSWER_DATASETS:
        collection = open_collection(service, data, name)
        by_doc: dict[str, list] = {}
        for chunk in collection.store.all_chunks():
            by_doc.setdefault(chunk.doc_id, []).append(chunk)
        for q in load_questions(dataset_files(data, name)[1]):
            if split_of(q["id"]) == "tune":
                question = " ".join(q["question"].split()[:MAX_QUESTION_WORDS])
                yield name, collection, by_doc, q, question, set(q.get("gold_ids") or [])


# --- answering over cached rows -----------------------------------------------------------------------------------

def hits_of(row_hits: list[dict]) -> list[SearchHit]:
    return [SearchHit(Chunk(h["doc_id"], h["doc_id"], h["title"], h["heading"], 0, h["text"]), h["score"], h["dense"])
            for h in row_hits]


def sample(rows: list[dict], keep, per_dataset: int) -> list[dict]:
    chosen = [r for r in rows if keep(r)]
    return random.Random(0).sample(chosen, min(per_dataset, len(chosen))) if per_dataset else chosen


def loo_parts(settings, folder: Path) -> dict:
    """The answer models fitted without this set (distill/selector_loo.py), loaded once for both LOO systems."""
    from retrieval.answering.answerability import AnswerabilityScorer
    from retrieval.answering.gap_detector import GapDetector
    from retrieval.answering.selection import SentenceSelector
    from retrieval.models import STUDENT_START, model_path

    (scorer,) = sorted((folder / "sentence-scorer").glob("v[0-9]*"))[-1:]
    minilm = model_path(settings.kbqa_home.models_dir, STUDENT_START)
    return {"selector": SentenceSelector.load(folder / "selector.json"),
            "sentence_scorer": AnswerabilityScorer.load(scorer, minilm),
            "gap_detector": GapDetector.load(folder / "gap_detector.json")}


def real_signals(rows: list[dict], key: str, relevance, selection) -> list:
    """Per row: the gap signals (retrieval/answering/gap_detector.py) of its answer attempt on ``row[key]`` hits,
    None when the relevance gate refuses."""
    from distill.gap_calibration import attempt_signals

    return [attempt_signals(row["question"], hits_of(row[key]), relevance, selection) for row in rows]


class Served:
    """A service's answer pipeline over cached rows, answers cached by key (generation is the slow part)."""

    def __init__(self, pipeline, cache: Path | None = None):
        self.pipeline, self.cache, self.seconds = pipeline, cache, []
        self.done = {}
        if cache is not None and cache.exists():
            self.done = {r["key"]: r for r in map(json.loads, cache.read_text().splitlines())}

    def __call__(self, key: str, question: str, row_hits: list[dict]) -> dict:
        if key in self.done:
            return self.done[key]
        start = time.perf_counter()
        hits = hits_of(row_hits)
        answer = self.pipeline.run(question, lambda _: hits)
        self.seconds.append(time.perf_counter() - start)
        result = {"key": key, "answer": answer.answer, "abstained": answer.abstained, "grounding": answer.grounding,
                  "cited": [c.n for c in answer.citations], "fallback_reason": answer.fallback_reason,
                  "unsupported": answer.unsupported}
        if self.cache is not None:
            with self.cache.open("a") as out:
                out.write(json.dumps(result) + "\n")
        self.done[key] = result
        return result


# --- the served product -------------------------------------------------------------------------------------------

@contextlib.contextmanager
def served(env: dict, port: int | None = None, wait_s: float = 300):
    """A real `kbqa serve` on loopback (a free port unless given), ready (/readyz 200) before its base URL is
    yielded; stopped at the end. Benchmarks drive the product the way a user starts it."""
    port = port or free_port()
    server = subprocess.Popen([sys.executable, "-m", "serve.cli", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(server, base + "/readyz", wait_s, "kbqa serve")
        yield base
    finally:
        server.terminate()
        server.wait(30)


# --- the synthetic collection of the scale benchmarks (bench_scale, bench_filters) --------------------------------
POOL_DATASETS = ("emanualqa", "covid_faq_deepset", "techqa_dev", "plausible_docs", "doc2dial_rc")
SHARD = 100   # records per JSONL file


def sentence_pool(data: Path) -> list[str]:
    """Every sentence of 5-60 words in the dev knowledge bases, once, in a fixed order."""
    seen = set()
    for name in POOL_DATASETS:
        kb, _ = dataset_files(data, name)
        for line in kb.read_text().splitlines():
            text = json.loads(line).get("text", "") if line.strip() else ""
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
                if 5 <= len(sentence.split()) <= 60:
                    seen.add(sentence)
    return sorted(seen)


class RecombinedEncoder:
    """A chunk's vector = the normalised mean of its pool sentences' real vectors; anything else (a question) is
    encoded by the real model. Same space, so questions retrieve recombined chunks sensibly."""

    def __init__(self, pool: list[str], vectors: np.ndarray, real):
        self.index = {s: i for i, s in enumerate(pool)}
        self.vectors, self.real = vectors, real
        self.known: dict[str, np.ndarray] = {}   # questions encoded beforehand: search timings without encoding
        self.dim = vectors.shape[1]
        self.encoder_id = "recombined@" + hashlib.sha256("\n".join(pool[:1000]).encode()).hexdigest()[:12]

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def encode(self, texts, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        unknown = []
        for row, text in enumerate(texts):
            ids = [self.index[line] for line in text.split("\n") if line in self.index]
            if text in self.known:
                out[row] = self.known[text]
            elif ids:
                v = self.vectors[ids].mean(axis=0)
                out[row] = v / np.linalg.norm(v)
            else:
                unknown.append(row)
        if unknown:
            out[unknown] = self.real.encode([texts[r] for r in unknown])
        return out


def document(i: int, pool: list[str], version: int = 0) -> dict:
    rng = random.Random(i * 7919 + version)
    sentences = [pool[rng.randrange(len(pool))] for _ in range(rng.randint(3, 7))]
    return {"id": f"d{i}", "title": f"Article {i}", "text": "\n".join(sentences)}


def questions(data: Path, count: int = 200) -> list[str]:
    qs = [q["question"] for name in POOL_DATASETS[:4] for q in load_questions(dataset_files(data, name)[1])]
    return random.Random(0).sample(qs, count)


def chunker():
    from ingest.chunker import Chunker

    return Chunker(lambda text: len(text.split()), chunk_tokens=400, overlap_tokens=20)
