"""Latency of /v1/search and /v1/ask on a real `kbqa serve` over loopback, one client.

    python benchs/bench_ask.py [--home .kbqa] [--rounds 2] [--mode select|generate]

Needs `make run` (or `kbqa ingest kb/docs`) done first. Every response is checked before timing counts:
200, the documented shape, citations that resolve to retrieved chunks, abstention on off-topic questions.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchs.common import publish, served  # noqa: E402
from retrieval.generation.cpu import describe  # noqa: E402

ON_TOPIC = [
    "How do I cancel my subscription?", "Does Plausible use cookies?", "How do I enable two-factor authentication?",
    "How can I exclude my own visits from the stats?", "How do I add a new website?",
    "Can I import my Google Analytics data?", "How do I track file downloads?", "How do I change my email address?",
    "How are unique visitors counted?", "How do I set up a proxy with Cloudflare?",
    "Can I share my dashboard publicly?", "How do I download my invoices?",
]
OFF_TOPIC = ["What is the boiling point of mercury in kelvin?", "Who won the 1998 football world cup?",
             "Give me a recipe for banana bread."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", type=Path, default=Path(".kbqa"))
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mode", default="select", choices=("select", "generate"), help="KBQA_ANSWER_MODE")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    env = {**os.environ, "KBQA_HOME": str(args.home), "HF_HUB_OFFLINE": "1", "KBQA_ANSWER_MODE": args.mode}
    with served(env, args.port) as base, httpx.Client(base_url=base, timeout=120) as client:
        client.post("/v1/ask", json={"question": ON_TOPIC[0]})  # warm-up
        search_ms, ask_ms, answered, abstained_on = [], [], 0, 0
        for _ in range(args.rounds):
            for question in ON_TOPIC + OFF_TOPIC:
                t = time.perf_counter()
                found = client.post("/v1/search", json={"query": question, "k": 5})
                search_ms.append((time.perf_counter() - t) * 1000)
                t = time.perf_counter()
                asked = client.post("/v1/ask", json={"question": question, "k": 5})
                ask_ms.append((time.perf_counter() - t) * 1000)
                assert found.status_code == 200 and asked.status_code == 200, (found.text, asked.text)
                body, retrieved = asked.json(), {r["chunk_id"] for r in found.json()["results"]}
                assert all(c["chunk_id"] in retrieved for c in body["citations"]), body
                if question in OFF_TOPIC:
                    abstained_on += body["abstained"]
                else:
                    answered += (not body["abstained"]) and bool(body["citations"])
    n_on, n_off = len(ON_TOPIC) * args.rounds, len(OFF_TOPIC) * args.rounds
    lines = [f"CPU: {describe()}; KBQA_ANSWER_MODE={args.mode}, one client.", "",
             f"checked: {answered}/{n_on} on-topic answered with citations, {abstained_on}/{n_off} off-topic abstained",
             "",
             "| route | requests | median ms | p95 ms |", "|---|---|---|---|"]
    for route, values in (("/v1/search", search_ms), ("/v1/ask", ask_ms)):
        lines.append(f"| {route} | {len(values)} | {statistics.median(values):.0f} | {np.percentile(values, 95):.0f} |")
    publish(lines, args.out or Path(f"benchs/results/bench_ask_{args.mode}.md"))


if __name__ == "__main__":
    main()
