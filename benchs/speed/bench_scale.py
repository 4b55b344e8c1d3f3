"""Issue 16 item 2: one collection at 10k / 100k / 1M chunks on this box.

    python -m benchs.speed.bench_scale --data PATH/TO/shared/data [--sizes 10000 100000 1000000]
    python -m benchs.speed.bench_scale --data PATH/TO/shared/data --incremental [--size 1000000] [--rounds 2]

The knowledge base is synthetic, recombined from the dev sets' own sentences (the issue allows it for timing): each
document is 3-7 sentences drawn from the pool of every dev knowledge base, one chunk each, in JSONL shards of 100
records. Encoding 1M chunks with the real MiniLM would take about an hour here, so chunk vectors are composed: the
normalised mean of the real MiniLM vectors of the chunk's sentences (each pool sentence is encoded once, for real).
Questions are 200 of the dev sets' real questions, encoded by the real MiniLM; search times are after encoding
(retrieval: FAISS, BM25, fusion, the store), and the encoding time per question is a column of its own (it does
not depend on the collection's size; TechQA's questions are whole forum posts, so it is high here). What is timed, per size, through the real Collection (chunker, SQLite store, FAISS, BM25):

- fresh ingest (chunks/s without encoding; the real encoder's throughput on the same texts is printed beside it);
- open: a fresh process opens the collection and runs one search; its resident memory after 200 more searches;
- search p50 / p95 per question (hybrid, dense, bm25; one at a time, after warm-up);
- an incremental ingest after 100 documents change (one shard rewritten); ``--incremental`` times it alone,
  the committed index served from memory against read back from disk, with the first search after each commit;
- the FAISS choice: recall@10 against exact search and latency of flat, IVF (nlist x nprobe) and HNSW on the
  collection's vectors, with the 200 real question vectors.

Timings are medians of one run; the CPU is printed with the table.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import (BENCH_HOME, SHARD, RecombinedEncoder, chunker, document, publish,
                           questions, sentence_pool)
from retrieval.answering.engines.cpu import describe

WORK = BENCH_HOME / "scale"
CHANGED = 100


def real_encoder():
    from retrieval.encoder import SentenceEncoder
    from retrieval.models import STUDENT_START, model_path

    return SentenceEncoder(model_path(BENCH_HOME / "models", STUDENT_START), device="cpu")


def pool_vectors(pool: list[str]) -> np.ndarray:
    key = hashlib.sha256("\n".join(pool).encode()).hexdigest()[:12]
    path = WORK / f"pool-{key}.npy"
    if not path.exists():
        print(f"encoding the pool of {len(pool)} sentences with the real MiniLM (once)", flush=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, real_encoder().encode(pool, show_progress=True))
    return np.load(path)


def write_kb(folder: Path, n: int, pool: list[str]) -> None:
    if (folder / "COMPLETE").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    for shard in range(0, n, SHARD):
        rows = [document(i, pool) for i in range(shard, min(n, shard + SHARD))]
        (folder / f"shard-{shard // SHARD:05d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "COMPLETE").write_text(str(n))


def open_and_search(directory: Path, pool_path: Path, data: Path) -> dict:
    """Run in a fresh process: open time, search latency by mode, resident memory."""
    from retrieval.collection import Collection

    pool = sentence_pool(data)
    encoder = RecombinedEncoder(pool, np.load(pool_path), real_encoder())
    asked = questions(data)
    encode_times = []
    for q in asked:        # the query encoding is timed apart: it does not depend on the collection's size
        t0 = time.perf_counter()
        encoder.known[q] = encoder.real.encode([q])[0]
        encode_times.append(time.perf_counter() - t0)
    rss_before = rss_mb()
    start = time.perf_counter()
    collection = Collection(directory, encoder)
    collection.search(asked[0], 5)
    opened = time.perf_counter() - start
    out = {"open_s": opened, "rss_open_mb": rss_mb(), "rss_model_mb": rss_before}
    for mode in ("hybrid", "dense", "bm25"):
        for q in asked[:10]:
            collection.search(q, 5, mode)
        times = []
        for q in asked:
            t0 = time.perf_counter()
            hits = collection.search(q, 5, mode)
            times.append(time.perf_counter() - t0)
            assert hits or mode == "bm25", f"no hits for {q!r} ({mode})"
        out[mode] = [float(np.percentile(times, 50) * 1000), float(np.percentile(times, 95) * 1000)]
    out["query_encode_ms"] = float(np.percentile(encode_times, 50) * 1000)
    out["rss_mb"] = rss_mb()
    # Correctness of the served index: its dense top 10 against exact search over every stored vector.
    ids, vectors = collection.store.all_vectors()
    queries = np.stack([encoder.known[q] for q in asked]).astype(np.float32)
    truth = ids[np.argsort(-(queries @ vectors.T), axis=1)[:, :10]]
    found = collection.index.search(queries, 10)[1]
    out["dense_recall_at_10"] = float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth)]))
    out["index"] = collection.stats()["index"]
    return out


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def index_choice(vectors: np.ndarray, queries: np.ndarray, n: int, kinds=("ivf", "hnsw")) -> list[dict]:
    """Recall@10 against exact search and per-query latency of the FAISS candidates on these vectors."""
    import faiss

    from retrieval.vector_index import HNSW_EF_CONSTRUCTION, HNSW_M

    dim = vectors.shape[1]
    exact = faiss.IndexFlatIP(dim)
    exact.add(vectors)
    _, truth = exact.search(queries, 10)
    rows = []

    def timed(index, label, build_s):
        for q in queries[:10]:
            index.search(q[None], 10)
        times, found = [], []
        for q, t in zip(queries, truth):
            t0 = time.perf_counter()
            _, ids = index.search(q[None], 10)
            times.append(time.perf_counter() - t0)
            found.append(len(set(ids[0]) & set(t)) / 10)
        rows.append({"index": label, "build_s": build_s, "recall": float(np.mean(found)),
                     "p50_ms": float(np.percentile(times, 50) * 1000), "p95_ms": float(np.percentile(times, 95) * 1000)})

    timed(exact, "flat (exact)", 0.0)
    # kbqa's nlist (4 sqrt(n)) and a finer one; past 200k only kbqa's (k-means on 2 cores takes minutes).
    for nlist in sorted({int(4 * np.sqrt(n))} | ({int(16 * np.sqrt(n))} if n <= 200_000 else set())
                        if "ivf" in kinds else []):
        if nlist * 39 > n:
            continue
        t0 = time.perf_counter()
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.train(vectors)
        ivf.add(vectors)
        build = time.perf_counter() - t0
        for nprobe in (8, 16, 32, 64, 128, 256, 512, 1024):
            if nprobe <= nlist // 2:
                ivf.nprobe = nprobe
                timed(ivf, f"IVF{nlist} nprobe {nprobe}", build)
        if nlist == int(4 * np.sqrt(n)):   # the same lists with 8-bit scalar-quantised vectors: 4x less to scan
            t0 = time.perf_counter()
            sq = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                               faiss.METRIC_INNER_PRODUCT)
            sq.train(vectors)
            sq.add(vectors)
            build = time.perf_counter() - t0
            for nprobe in (64, 256, 1024):
                if nprobe <= nlist // 2:
                    sq.nprobe = nprobe
                    timed(sq, f"IVF{nlist},SQ8 nprobe {nprobe}", build)
    if "hnsw" not in kinds:
        return rows
    t0 = time.perf_counter()   # kbqa's HNSW (retrieval/vector_index.py): removals are tombstones
    hnsw = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    hnsw.add(vectors)
    build = time.perf_counter() - t0
    for ef in (64, 128, 256, 384, 512, 768):
        hnsw.hnsw.efSearch = ef
        timed(hnsw, f"HNSW{HNSW_M} efSearch {ef}", build)
    return rows


def measure(n: int, data: Path, pool: list[str], pool_path: Path, real, with_choice: bool = True) -> dict:
    from retrieval.collection import Collection

    kb = WORK / f"kb-{n}"
    write_kb(kb, n, pool)
    directory = WORK / f"collection-{n}"
    shutil.rmtree(directory, ignore_errors=True)
    encoder = RecombinedEncoder(pool, np.load(pool_path), real)
    collection = Collection(directory, encoder, create=True)
    start = time.perf_counter()
    report = collection.ingest(kb, chunker())
    ingest_s = time.perf_counter() - start
    assert report.chunks_total == n and not report.errors, (report.chunks_total, report.errors)
    collection.close()
    del collection

    # A fresh process opens it: open time and memory as `kbqa serve` would see them.
    child = subprocess.run([sys.executable, "-m", "benchs.speed.bench_scale", "--data", str(data), "--child", str(directory), str(pool_path)],
                           capture_output=True, text=True, check=True)
    opened = json.loads(child.stdout.strip().splitlines()[-1])

    # 100 documents change: one shard rewritten, then an incremental ingest.
    shard = kb / "shard-00000.jsonl"
    original = shard.read_text()
    shard.write_text("".join(json.dumps(document(i, pool, version=1)) + "\n" for i in range(CHANGED)))
    collection = Collection(directory, encoder)
    collection.search("warm up", 5)
    start = time.perf_counter()
    changed = collection.ingest(kb, chunker())
    incremental_s = time.perf_counter() - start
    assert changed.changed == [shard.name], changed.changed
    assert collection.store.counts()["chunks"] == n and collection.index.size == n
    shard.write_text(original)

    ids, vectors = collection.store.all_vectors()
    asked = questions(data)
    choice = index_choice(vectors, real.encode(asked), n) if with_choice else []
    texts = [document(i, pool)["text"] for i in range(2000)]
    t0 = time.perf_counter()
    real.encode(texts)
    encode_rate = len(texts) / (time.perf_counter() - t0)
    collection.close()
    return {"n": n, "ingest_s": ingest_s, "incremental_s": incremental_s, "encode_rate": encode_rate,
            "disk_mb": sum(f.stat().st_size for f in directory.rglob("*") if f.is_file()) / 2**20,
            **opened, "choice": choice}


def choice_table(rows: list[tuple[int, dict]]) -> list[str]:
    lines = ["| chunks | index | build (s) | recall@10 | p50 (ms) | p95 (ms) |", "|---|---|---|---|---|---|"]
    for n, c in rows:
        lines.append(f"| {n:,} | {c['index']} | {c['build_s']:.1f} | {c['recall']:.3f} | {c['p50_ms']:.2f} | "
                     f"{c['p95_ms']:.2f} |")
    return lines


def choice_only(args, real) -> None:
    from ingest.store import ChunkStore

    asked = real.encode(questions(args.data))
    rows = []
    for n in args.sizes:
        _, vectors = ChunkStore(WORK / f"collection-{n}" / "store.sqlite").all_vectors()
        for c in index_choice(vectors, asked, n, args.kinds):
            print(n, c, flush=True)
            rows.append((n, c))
    publish([f"`python -m benchs.speed.bench_scale --choice-only --sizes {' '.join(map(str, args.sizes))}`. CPU: "
             f"{describe()}. FAISS candidates on the collections' vectors (composed from real MiniLM sentence "
             "vectors), 200 real dev questions one at a time, recall@10 against exact search.", ""]
            + choice_table(rows), (args.out or Path("benchs/results/bench_scale.md")).with_name(f"bench_scale_index_choice_{'_'.join(args.kinds)}.md"
                                                      if args.kinds != ["ivf", "hnsw"] else "bench_scale_index_choice.md"))


def incremental_process(data: Path, size: int, rounds: int, reload: bool) -> tuple[list[float], list[float]]:
    import retrieval.collection as collection_module

    if reload:   # the way before: every commit's indexes read back from disk
        published = collection_module.Collection._published
        collection_module.Collection._published = lambda self, generation, committed=None: published(self, generation)
    pool = sentence_pool(data)
    encoder = RecombinedEncoder(pool, np.load(next(WORK.glob("pool-*.npy"))), real_encoder())
    kb, shard = WORK / f"kb-{size}", WORK / f"kb-{size}" / "shard-00000.jsonl"
    collection = collection_module.Collection(WORK / f"collection-{size}", encoder)
    collection.search("warm up", 5)
    original, times, first_search = shard.read_text(), [], []
    try:
        for version in range(2, 2 + rounds):
            shard.write_text("".join(json.dumps(document(i, pool, version=version)) + "\n" for i in range(CHANGED)))
            start = time.perf_counter()
            report = collection.ingest(kb, chunker())
            times.append(time.perf_counter() - start)
            assert report.changed == [shard.name] and collection.index.size == size, report.changed
            start = time.perf_counter()
            assert collection.search("how do I reset my password", 5)
            first_search.append(time.perf_counter() - start)
    finally:
        shard.write_text(original)
        start = time.perf_counter()
        collection.ingest(kb, chunker())
        times.append(time.perf_counter() - start)
    return times, first_search


def incremental(args) -> None:
    """100 changed documents at scale, the served index handed over in memory vs read back from disk after the
    commit, and how long the first search after each commit takes. Runs on the collection a default run left in
    .kbqa-bench/scale (same kb shards, same composed vectors): each round rewrites shard 0 (100 documents) as a new
    version and ingests it; a last ingest restores the shard. Each way runs in its own fresh process, alternating,
    twice."""
    rows = {"reload": [], "handoff": []}
    for way in ("reload", "handoff") * 2:
        out = subprocess.run([sys.executable, "-m", "benchs.speed.bench_scale", "--data", str(args.data),
                              "--size", str(args.size), "--rounds", str(args.rounds), "--incremental-child", way],
                             capture_output=True, text=True, check=True)
        rows[way].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(way, rows[way][-1], flush=True)
    lines = [f"Seconds per ingest of 100 changed documents ({args.rounds} rounds, then the restore), each way in two fresh processes.", "",
             "| after the commit | process | ingests (s) | median (s) | first search after each (ms) |",
             "|---|---|---|---|---|"]
    for way, label in (("reload", "indexes read back from disk (before)"), ("handoff", "committed indexes served from memory")):
        for n, (times, first) in enumerate(rows[way], 1):
            lines.append(f"| {label} | {n} | {' / '.join(f'{t:.2f}' for t in times)} | "
                         f"{np.median([t for r, _ in rows[way] for t in r]):.2f} | "
                         f"{' / '.join(f'{t * 1000:.0f}' for t in first)} |")
    publish(lines, args.out or Path("benchs/results/bench_scale_incremental.md"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--choice-only", action="store_true",
                        help="only the FAISS comparison, on the collections an earlier run left (.kbqa-bench/scale)")
    parser.add_argument("--no-choice", action="store_true", help="skip the FAISS comparison (--choice-only runs it)")
    parser.add_argument("--kinds", nargs="+", default=["ivf", "hnsw"], help="index kinds --choice-only compares")
    parser.add_argument("--incremental", action="store_true",
                        help="only the incremental ingest of 100 changed documents at --size (after a default run)")
    parser.add_argument("--size", type=int, default=1_000_000, help="with --incremental")
    parser.add_argument("--rounds", type=int, default=2, help="with --incremental")
    parser.add_argument("--incremental-child", choices=("reload", "handoff"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.incremental_child:
        print(json.dumps(incremental_process(args.data, args.size, args.rounds, args.incremental_child == "reload")))
        return
    if args.incremental:
        incremental(args)
        return
    if args.child:
        print(json.dumps(open_and_search(Path(args.child[0]), Path(args.child[1]), args.data)))
        return
    pool = sentence_pool(args.data)
    pool_vectors(pool)
    pool_path = next(WORK.glob(f"pool-{hashlib.sha256(chr(10).join(pool).encode()).hexdigest()[:12]}.npy"))
    real = real_encoder()
    if args.choice_only:
        choice_only(args, real)
        return
    results = []
    for n in args.sizes:
        result = measure(n, args.data, pool, pool_path, real, with_choice=not args.no_choice)
        print(json.dumps(result), flush=True)
        results.append(result)
    lines = [f"`python -m benchs.speed.bench_scale --sizes {' '.join(map(str, args.sizes))}`. CPU: {describe()}. "
             f"Pool: {len(pool)} real sentences of the dev knowledge bases; chunk vectors composed from their real "
             "MiniLM vectors; 200 real dev questions, MiniLM-encoded beforehand (search times exclude encoding, timed "
             "apart). Medians of one run.", "",
             "| chunks | fresh ingest without encoding (s) | chunks/s | MiniLM encoding (chunks/s) | index | open (s) | "
             "RSS after open / after 200 searches (MB) | on disk (MB) | hybrid p50 / p95 (ms) | dense p50 / p95 (ms) | "
             "bm25 p50 / p95 (ms) | dense recall@10 | + query encoding p50 (ms) | 100 changed documents (s) |",
             "|---" * 14 + "|"]
    for r in results:
        lines.append(f"| {r['n']:,} | {r['ingest_s']:.1f} | {r['n'] / r['ingest_s']:.0f} | {r['encode_rate']:.0f} | "
                     f"{r['index']} | {r['open_s']:.2f} | {r['rss_open_mb']:.0f} / {r['rss_mb']:.0f} | "
                     f"{r['disk_mb']:.0f} | {r['hybrid'][0]:.1f} / {r['hybrid'][1]:.1f} | "
                     f"{r['dense'][0]:.1f} / {r['dense'][1]:.1f} | {r['bm25'][0]:.1f} / {r['bm25'][1]:.1f} | "
                     f"{r['dense_recall_at_10']:.3f} | {r['query_encode_ms']:.1f} | {r['incremental_s']:.1f} |")
    if not args.no_choice:
        lines += ["", "FAISS candidates on each collection's vectors (200 real question vectors, one at a time; "
                  "recall@10 against exact search):", ""]
        lines += choice_table([(r["n"], c) for r in results for c in r["choice"]])
    publish(lines, args.out or Path("benchs/results/bench_scale.md"))


if __name__ == "__main__":
    main()
