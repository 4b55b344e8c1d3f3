"""Load: N concurrent clients against a real `kbqa serve` on loopback, for a fixed time per route.

    python -m benchs.speed.bench_load [--clients 1 8 32] [--search-seconds 10] [--ask-seconds 30]

Uses $KBQA_HOME (default ./.kbqa) with the default collection ingested (`make run` does it). Each client
sends the next question as soon as its previous answer arrives, until the time is up; requests started
before then are waited for. Throughput = completed requests / time until the last one completed.
Checks every answer (200, right shape) before counting it. A 503 with Retry-After is admission control refusing
(serve/admission.py): counted as refused, and that client waits the Retry-After seconds, as a polite client
does; anything else is an error. Latencies are of the admitted (completed) requests.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

import httpx

from benchs.common import publish, served
from retrieval.answering.engines.cpu import describe

QUESTIONS = [
    "How do I cancel my subscription?", "Does Plausible use cookies?", "How do I enable two-factor authentication?",
    "How do I add a new website?", "Can I export my stats to CSV?", "How do I reset my password?",
    "How do I invite team members?", "How do I get an invoice?", "How do I exclude my own visits?",
    "What payment methods do you accept?", "How do I change my email address?", "How do I delete my account?",
]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))] if ordered else float("nan")


def drive(base: str, route: str, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors: list[str] = []
    refused: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds
    start = time.perf_counter()
    last_done = [start]

    def client(number: int) -> None:
        with httpx.Client(base_url=base, timeout=900) as http:
            i = number
            while time.perf_counter() < deadline:
                question = QUESTIONS[i % len(QUESTIONS)]
                i += clients
                body = {"query": question, "k": 5} if route == "search" else {"question": question}
                t0 = time.perf_counter()
                retry_after = None
                try:
                    response = http.post(f"/v1/{route}", json=body)
                    ok = response.status_code == 200 and ("results" in response.json() if route == "search"
                                                          else "answer" in response.json())
                    if response.status_code == 503 and "retry-after" in response.headers:
                        retry_after = float(response.headers["retry-after"])
                    problem = None if ok or retry_after is not None else f"{response.status_code}: {response.text[:120]}"
                except httpx.HTTPError as exc:
                    problem = repr(exc)
                elapsed = time.perf_counter() - t0
                with lock:
                    if retry_after is not None:
                        refused.append(elapsed)
                    else:
                        (errors.append(problem) if problem else latencies.append(elapsed))
                        last_done[0] = max(last_done[0], time.perf_counter())
                if retry_after is not None:
                    time.sleep(max(0.0, min(retry_after, deadline - time.perf_counter())))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = last_done[0] - start
    return {"route": route, "clients": clients, "completed": len(latencies), "errors": len(errors),
            "refused": len(refused), "refused_p95": percentile(refused, 0.95),
            "throughput": len(latencies) / wall if wall else 0.0, "p50": percentile(latencies, 0.5),
            "p95": percentile(latencies, 0.95), "p99": percentile(latencies, 0.99), "wall": wall,
            "first_error": errors[0] if errors else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--search-seconds", type=float, default=10)
    parser.add_argument("--ask-seconds", type=float, default=30)
    parser.add_argument("--routes", nargs="+", default=["search", "ask"], choices=("search", "ask"))
    parser.add_argument("--no-batching", action="store_true", help="serve with KBQA_QUERY_BATCHING=false")
    parser.add_argument("--answer-mode", default="auto", choices=("auto", "select", "generate"),
                        help="KBQA_ANSWER_MODE of the server")
    parser.add_argument("--out", type=Path, default=Path("benchs/results/bench_load.md"))
    args = parser.parse_args()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "KBQA_RATE_LIMIT_PER_MINUTE": "0",
           "KBQA_QUERY_BATCHING": "false" if args.no_batching else "true", "KBQA_ANSWER_MODE": args.answer_mode}
    rows = []
    with served(env) as base:
        for route, seconds in (("search", args.search_seconds), ("ask", args.ask_seconds)):
            if route not in args.routes:
                continue
            for clients in args.clients:
                row = drive(base, route, clients, seconds)
                rows.append(row)
                print(row, flush=True)
    lines = [f"`python -m benchs.speed.bench_load {' '.join(sys.argv[1:])}`. CPU: {describe()}. Real `kbqa serve` on "
             f"loopback, default collection (kb/), answer mode {args.answer_mode}, query batching "
             f"{'off' if args.no_batching else 'on'}, admission control as configured by default, search for "
             f"{args.search_seconds:.0f} s and ask for {args.ask_seconds:.0f} s per row. Latencies: admitted requests; "
             "refused = 503 with Retry-After (the client then waits that long).", "",
             "| route | clients | completed | refused (503) | other errors | throughput (req/s) | p50 (s) | p95 (s) | "
             "p99 (s) | 503 p95 (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| /v1/{r['route']} | {r['clients']} | {r['completed']} | {r['refused']} | {r['errors']} | "
                     f"{r['throughput']:.2f} | {r['p50']:.3f} | {r['p95']:.3f} | {r['p99']:.3f} | "
                     f"{r['refused_p95']:.3f} |")
    errors = [r["first_error"] for r in rows if r["first_error"]]
    if errors:
        lines += ["", "First errors: " + "; ".join(errors)]
    publish(lines, args.out)


if __name__ == "__main__":
    main()
