"""Exact (flat) vs IVF index: recall@10 against the exact answer first, then query latency.

    python benchs/bench_index.py [--sizes 10000 50000 200000] [--dim 384]

Vectors are a clustered Gaussian mixture (closer to sentence embeddings than uniform noise),
L2-normalised. Decides retrieval.vector_index.EXACT_LIMIT.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from retrieval.vector_index import VectorIndex  # noqa: E402


def clustered(n: int, dim: int, rng: np.random.Generator, noise: float) -> np.ndarray:
    centres = rng.normal(size=(max(n // 200, 8), dim)).astype(np.float32)
    rows = centres[rng.integers(0, len(centres), n)] + noise * rng.normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 50_000, 200_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--noise", type=float, default=1.5, help="spread around cluster centres: higher is harder for IVF")
    args = parser.parse_args()
    faiss.omp_set_num_threads(2)
    rng = np.random.default_rng(0)
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, dim {args.dim}, noise {args.noise}, one query at a time")
    print("| vectors | index | build s | recall@10 vs exact | median ms/query | p95 ms/query | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        data = clustered(n + args.queries, args.dim, rng, args.noise)
        vectors, queries = data[:n], data[n:]
        ids = np.arange(n, dtype=np.int64)
        results, timings = {}, {}
        for kind, limit in (("flat", n + 1), ("ivf", 0)):
            start = time.perf_counter()
            index = VectorIndex.build(ids, vectors, args.dim, exact_limit=limit)
            build = time.perf_counter() - start
            assert index.kind == kind
            found, lat = [], []
            for q in queries:
                t = time.perf_counter()
                found.append(index.search(q[None, :], 10)[1][0])
                lat.append((time.perf_counter() - t) * 1000)
            results[kind], timings[kind] = np.array(found), (build, statistics.median(lat), np.percentile(lat, 95))
        exact = results["flat"]
        for kind in ("flat", "ivf"):
            recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(results[kind], exact)])
            build, med, p95 = timings[kind]
            print(f"| {n:,} | {kind} | {build:.2f} | {recall:.3f} | {med:.2f} | {p95:.2f} | "
                  f"{timings['flat'][1] / med:.1f}x |")


if __name__ == "__main__":
    main()
