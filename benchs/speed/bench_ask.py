"""Latency of /v1/search and /v1/ask on a real `kbqa serve` over loopback, one client, per answering backend.

    python -m benchs.speed.bench_ask [--home .kbqa] [--rounds 2] [--backends select,generate,llama]

Backends, each a fresh `kbqa serve` in turn within one run: ``select`` (the default: quoted sentences),
``generate`` (the embedded SmolLM2 writes, in-process), ``llama`` (KBQA_GENERATOR_URL pointed at llama.cpp's server
serving the bundled SmolLM2 GGUF on this machine, retrieval/answering/engines/llama_server.py; fallback ``error``, so a failing remote
fails the run instead of hiding behind the quoted answer). Needs `make run` (or `kbqa ingest kb/docs`) done first.
Every response is checked before timing counts: 200, the documented shape, citations that resolve to retrieved
chunks, abstention on off-topic questions.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np

from benchs.common import OFF_TOPIC, ON_TOPIC, publish, served
from retrieval.answering.engines.cpu import describe

def measure(env: dict, port: int, rounds: int) -> dict:
    """One backend: (search ms, ask ms, checked counts, how the answers were grounded)."""
    with served(env, port) as base, httpx.Client(base_url=base, timeout=120) as client:
        client.post("/v1/ask", json={"question": ON_TOPIC[0]})  # warm-up
        out = {"search": [], "ask": [], "answered": 0, "abstained_on": 0, "grounding": Counter()}
        for _ in range(rounds):
            for question in ON_TOPIC + OFF_TOPIC:
                t = time.perf_counter()
                found = client.post("/v1/search", json={"query": question, "k": 5})
                out["search"].append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                asked = client.post("/v1/ask", json={"question": question, "k": 5})
                out["ask"].append((time.perf_counter() - t) * 1000)
                assert found.status_code == 200 and asked.status_code == 200, (found.text, asked.text)
                body, retrieved = asked.json(), {r["chunk_id"] for r in found.json()["results"]}
                assert all(c["chunk_id"] in retrieved for c in body["citations"]), body
                assert body["fallback_reason"] != "generator unavailable", body
                out["grounding"][body["grounding"]] += 1
                if question in OFF_TOPIC:
                    out["abstained_on"] += body["abstained"]
                else:
                    out["answered"] += (not body["abstained"]) and bool(body["citations"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path(".kbqa"))
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backends", default="select,generate", help="comma-separated: select, generate, llama")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    backends = args.backends.split(",")
    assert set(backends) <= {"select", "generate", "llama"}, backends
    base_env = {**os.environ, "KBQA_HOME": str(args.home), "HF_HUB_OFFLINE": "1"}
    results = {}
    with ExitStack() as stack:
        for backend in backends:
            env = {**base_env, "KBQA_ANSWER_MODE": "select" if backend == "select" else "generate"}
            if backend == "llama":
                from retrieval.answering.engines.llama_server import ALIAS, llama_served

                env.update(KBQA_GENERATOR_URL=stack.enter_context(llama_served()), KBQA_GENERATOR_MODEL=ALIAS,
                           KBQA_GENERATOR_FALLBACK="error")
            results[backend] = measure(env, args.port, args.rounds)
            print(f"{backend}: done", flush=True)
    n_on, n_off = len(ON_TOPIC) * args.rounds, len(OFF_TOPIC) * args.rounds
    lines = [f"CPU: {describe()}; one client, {args.rounds} rounds of {n_on // args.rounds} on-topic and "
             f"{n_off // args.rounds} off-topic questions per backend, one run.", "",
             "| backend | on-topic answered with citations | off-topic abstained | answers by grounding "
             "| /v1/search median ms | /v1/ask median ms | /v1/ask p95 ms |", "|---" * 7 + "|"]
    for backend, r in results.items():
        grounding = ", ".join(f"{k} {v}" for k, v in sorted(r["grounding"].items()))
        lines.append(f"| {backend} | {r['answered']}/{n_on} | {r['abstained_on']}/{n_off} | {grounding} | "
                     f"{statistics.median(r['search']):.0f} | {statistics.median(r['ask']):.0f} | "
                     f"{np.percentile(r['ask'], 95):.0f} |")
    if "select" in results:
        base = statistics.median(results["select"]["ask"])
        lines += ["", "/v1/ask median relative to select: " + ", ".join(
            f"{b} {statistics.median(r['ask']) / base:.1f}x" for b, r in results.items())]
    publish(lines, args.out or Path(f"benchs/results/bench_ask_{'_'.join(backends)}.md"))


if __name__ == "__main__":
    main()
