"""100 changed documents at scale, served index handed over in memory vs read back from disk after the commit; and
how long the first search after each commit takes.

    python benchs/bench_scale_incremental.py --data PATH/TO/shared/data [--size 1000000] [--rounds 2]

Runs on the collection benchs/bench_scale.py left in .kbqa-bench/scale (same kb shards, same composed vectors): each
round rewrites shard 0 (100 documents) as a new version and ingests it; a last ingest restores the shard. Each way
runs in its own fresh process (this script re-invokes itself), alternating, twice.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs import bench_scale as bs  # noqa: E402
from benchs.common import publish  # noqa: E402
from retrieval.answering.engines.cpu import describe# noqa: E402


def one_process(data: Path, size: int, rounds: int, reload: bool) -> tuple[list[float], list[float]]:
    import retrieval.collection as collection_module

    if reload:   # the way before: every commit's indexes read back from disk
        published = collection_module.Collection._published
        collection_module.Collection._published = lambda self, generation, committed=None: published(self, generation)
    pool = bs.sentence_pool(data)
    encoder = bs.RecombinedEncoder(pool, np.load(next(bs.WORK.glob("pool-*.npy"))), bs.real_encoder())
    kb, shard = bs.WORK / f"kb-{size}", bs.WORK / f"kb-{size}" / "shard-00000.jsonl"
    collection = collection_module.Collection(bs.WORK / f"collection-{size}", encoder)
    collection.search("warm up", 5)
    original, times, first_search = shard.read_text(), [], []
    try:
        for version in range(2, 2 + rounds):
            shard.write_text("".join(json.dumps(bs.document(i, pool, version=version)) + "\n" for i in range(bs.CHANGED)))
            start = time.perf_counter()
            report = collection.ingest(kb, bs.chunker())
            times.append(time.perf_counter() - start)
            assert report.changed == [shard.name] and collection.index.size == size, report.changed
            start = time.perf_counter()
            assert collection.search("how do I reset my password", 5)
            first_search.append(time.perf_counter() - start)
    finally:
        shard.write_text(original)
        start = time.perf_counter()
        collection.ingest(kb, bs.chunker())
        times.append(time.perf_counter() - start)
    return times, first_search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=("reload", "handoff"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("benchs/results/bench_scale_incremental.md"))
    args = parser.parse_args()
    if args.child:
        print(json.dumps(one_process(args.data, args.size, args.rounds, args.child == "reload")))
        return
    rows = {"reload": [], "handoff": []}
    for way in ("reload", "handoff") * 2:
        out = subprocess.run([sys.executable, __file__, "--data", str(args.data), "--size", str(args.size),
                              "--rounds", str(args.rounds), "--child", way], capture_output=True, text=True, check=True)
        rows[way].append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(way, rows[way][-1], flush=True)
    lines = [f"`python benchs/bench_scale_incremental.py --size {args.size}`. CPU: {describe()}. Seconds per ingest of 100 "
             f"changed documents ({args.rounds} rounds, then the restore), each way in two fresh processes.", "",
             "| after the commit | process | ingests (s) | median (s) | first search after each (ms) |",
             "|---|---|---|---|---|"]
    for way, label in (("reload", "indexes read back from disk (before)"), ("handoff", "committed indexes served from memory")):
        for n, (times, first) in enumerate(rows[way], 1):
            lines.append(f"| {label} | {n} | {' / '.join(f'{t:.2f}' for t in times)} | "
                         f"{np.median([t for r, _ in rows[way] for t in r]):.2f} | "
                         f"{' / '.join(f'{t * 1000:.0f}' for t in first)} |")
    publish(lines, args.out)


if __name__ == "__main__":
    main()
