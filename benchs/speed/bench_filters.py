"""Issue 28's filtered search at scale: one collection at 10k / 100k / 1M chunks, filters keeping 50%, 10%, 1% and
0.1% of the rows, against the unfiltered search in the same run.

    python -m benchs.speed.bench_filters --data PATH/TO/shared/data [--sizes 10000 100000 1000000] [--pool 4000]

The knowledge base is benchs/speed/bench_scale.py's synthetic one (documents of 3-7 real dev-set sentences, one chunk
each, vectors the mean of the sentences' real MiniLM vectors), with one metadata field, ``bucket`` = document number
mod 1000, so ``{"bucket": {"$lt": B}}`` keeps B per mille. ``--pool`` sentences of the dev sets are encoded (once,
cached). 200 real dev questions, encoded beforehand (search times exclude query encoding, as bench_scale's).

Checked first, for every filter: every hybrid and BM25 hit is inside the filter. Then per size and filter: hybrid,
dense and BM25 p50 through the real Collection; the dense top 10's recall against exact search over the filtered
rows; the first use of a filter (computing the ids it keeps; cached per generation after). Medians of one run.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from benchs.common import (BENCH_HOME, REPO, SHARD, RecombinedEncoder, chunker, document, publish, questions,
                           sentence_pool)
from retrieval.answering.engines.cpu import describe

WORK = BENCH_HOME / "filters"
SHARES = (None, 500, 100, 10, 1)   # buckets kept of 1000: all, 50%, 10%, 1%, 0.1%


def real_encoder():
    from retrieval.encoder import SentenceEncoder
    from retrieval.models import STUDENT_START, model_path

    return SentenceEncoder(model_path(REPO / ".kbqa" / "models", STUDENT_START), device="cpu")


def write_kb(folder: Path, n: int, pool: list[str]) -> None:
    if (folder / "COMPLETE").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(0, n, SHARD):
        rows = [{**document(i, pool), "bucket": i % 1000} for i in range(shard, min(n, shard + SHARD))]
        (folder / f"shard-{shard // SHARD:05d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "COMPLETE").write_text(str(n))


def p50(times: list[float]) -> float:
    return float(np.percentile(times, 50) * 1000)


def measure(n: int, pool: list[str], vectors: np.ndarray, real, asked: list[str]) -> list[dict]:
    from retrieval.collection import Collection

    kb = WORK / f"kb-{n}"
    write_kb(kb, n, pool)
    directory = WORK / f"collection-{n}"
    shutil.rmtree(directory, ignore_errors=True)
    encoder = RecombinedEncoder(pool, vectors, real)
    for q in asked:
        encoder.known[q] = real.encode([q])[0]
    collection = Collection(directory, encoder, create=True)
    report = collection.ingest(kb, chunker())
    assert report.chunks_total == n and not report.errors, (report.chunks_total, report.errors)
    ids, stored = collection.store.all_vectors()
    bucket_of = {int(i): int(i_doc[1:]) % 1000 for i, i_doc in
                 collection.store.db.execute("SELECT faiss_id, doc_id FROM chunks").fetchall()}
    buckets = np.array([bucket_of[int(i)] for i in ids])
    queries = np.stack([encoder.known[q] for q in asked]).astype(np.float32)
    rows = []
    for keep in SHARES:
        filter_ = None if keep is None else {"bucket": {"$lt": keep}}
        first_s = 0.0
        if filter_ is not None:
            t0 = time.perf_counter()
            allowed = collection.allowed(filter_)
            first_s = time.perf_counter() - t0
            assert len(allowed) == int((buckets < keep).sum())
        out = {"n": n, "index": collection.stats()["index"], "share": 1.0 if keep is None else keep / 1000,
               "rows": n if keep is None else int((buckets < keep).sum()), "first_use_s": first_s}
        for mode in ("hybrid", "dense", "bm25"):
            for q in asked[:10]:
                collection.search(q, 10, mode, filter_)
            times = []
            for q in asked:
                t0 = time.perf_counter()
                hits = collection.search(q, 10, mode, filter_)
                times.append(time.perf_counter() - t0)
                if keep is not None:   # correctness first: nothing outside the filter
                    assert all(int(h.chunk.doc_id[1:]) % 1000 < keep for h in hits), (mode, q)
            out[mode] = p50(times)
        mask = np.ones(len(ids), bool) if keep is None else buckets < keep
        truth = ids[mask][np.argsort(-(queries @ stored[mask].T), axis=1)[:, :10]]
        found = collection.index.search(queries, 10, None if keep is None else np.sort(ids[mask]))[1]
        out["recall"] = float(np.mean([len(set(f) & set(t)) / min(10, mask.sum()) for f, t in zip(found, truth)]))
        rows.append(out)
        print(json.dumps(out), flush=True)
    collection.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--pool", type=int, default=4000, help="dev-set sentences the documents are drawn from")
    parser.add_argument("--out", type=Path, default=Path("benchs/results/bench_filters.md"))
    args = parser.parse_args()
    pool = sentence_pool(args.data)[: args.pool]
    real = real_encoder()
    cache = WORK / f"pool-{args.pool}.npy"
    if not cache.exists():
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, real.encode(pool, show_progress=True))
    vectors = np.load(cache)
    asked = questions(args.data)
    rows = [row for n in args.sizes for row in measure(n, pool, vectors, real, asked)]
    lines = [f"`python -m benchs.speed.bench_filters --sizes {' '.join(map(str, args.sizes))} --pool {args.pool}` on "
             f"{describe()}: 200 real questions, k = 10; every filtered hit checked inside its filter.", "",
             "| chunks | index | filter keeps | rows | first use (s) | hybrid p50 (ms) | x unfiltered | dense p50 (ms) "
             "| x unfiltered | bm25 p50 (ms) | dense recall@10 vs exact filtered |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = {r["n"]: r for r in rows if r["share"] == 1.0}
    for r in rows:
        b = base[r["n"]]
        lines.append(f"| {r['n']:,} | {r['index']} | {r['share']:.1%} | {r['rows']:,} | {r['first_use_s']:.2f} | "
                     f"{r['hybrid']:.2f} | {r['hybrid'] / b['hybrid']:.2f} | {r['dense']:.2f} | "
                     f"{r['dense'] / b['dense']:.2f} | {r['bm25']:.2f} | {r['recall']:.3f} |")
    publish(lines, args.out)


if __name__ == "__main__":
    main()
