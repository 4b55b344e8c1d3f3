"""Load and churn: search and ask clients against a real `kbqa serve` on loopback while documents are uploaded and
deleted, `kbqa ingest` runs in its own process on the same collection (a second writer: its folder and the uploads
both hold ``race.md``), (optionally) a distillation promotes a new encoder, and a whole collection is deleted.

    python -m benchs.speed.churn [--clients 8] [--seconds 30] [--files 20] [--distill]

Builds its own KBQA_HOME in a temporary folder (models linked from $KBQA_HOME/models, default ./.kbqa/models), with
two collections from the first ``--files`` pages of kb/docs: ``default`` and ``churn``. Every response is counted by
route, collection and status; the only non-200 allowed are 404 on ``churn`` once its deletion has begun and the
admission control's 503 with Retry-After on ask (answers at capacity: the CLI writer's process takes cores); the
two writers' shared ``race.md`` must be stored by one and reported, by name, as a conflict by the other. Prints the
table and writes benchs/results/churn.md. Bounded: loopback only, fixed duration, its home removed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

from benchs.common import REPO, publish, served
from retrieval.answering.engines.cpu import describe as describe_cpu

QUESTIONS = ["How do I invite team members?", "Can I export my stats to CSV?", "How do I add a new website?",
             "Does Plausible use cookies?", "How do I track file downloads?", "Who can access my data?"]


def kbqa(env: dict, *args: str, timeout: float = 1800) -> None:
    subprocess.run([sys.executable, "-m", "serve.cli", *args], env=env, check=True, timeout=timeout,
                   stdout=subprocess.DEVNULL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--files", type=int, default=20, help="pages of kb/docs in each collection")
    parser.add_argument("--distill", action="store_true", help="also run a (real, slow) distillation of default")
    parser.add_argument("--out", type=Path, default=Path("benchs/results/churn.md"))
    args = parser.parse_args()
    models = Path(os.environ.get("KBQA_HOME", REPO / ".kbqa")) / "models"
    home = Path(tempfile.mkdtemp(prefix="kbqa-churn-"))
    (home / "models").symlink_to(models.resolve())
    pages = home / "pages"
    pages.mkdir()
    for page in sorted((REPO / "kb" / "docs").glob("*.md"))[: args.files]:
        shutil.copy(page, pages / page.name)
    env = {**os.environ, "KBQA_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "KBQA_RATE_LIMIT_PER_MINUTE": "0"}
    try:
        for name in ("default", "churn"):
            kbqa(env, "ingest", str(pages), "--collection", name)
        with served(env) as base:
            counts, problems = run(base, args, env, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    lines = [f"`python -m benchs.speed.churn --clients {args.clients} --seconds {args.seconds:.0f} --files {args.files}"
             f"{' --distill' if args.distill else ''}` on {describe_cpu()}: real `kbqa serve` on loopback, collections"
             f" `default` and `churn` ({args.files} pages of kb/docs each).", "",
             "| request | collection | status | count |", "|---|---|---|---|"]
    for (request, collection, status), count in sorted(counts.items()):
        lines.append(f"| {request} | {collection} | {status} | {count} |")
    lines += ["", f"**Errors: {len(problems)}**" + (" (none but the documented 404 on the deleted collection and "
                                                     "503 + Retry-After at answering capacity)"
                                                     if not problems else ": " + "; ".join(problems[:10]))]
    publish(lines, args.out)
    if problems:
        raise SystemExit(1)


RACE = "race.md"


def race_page(n: int, writer: str) -> bytes:
    return f"# Race\n\nThe {writer}'s version {n} of the page both writers hold.\n".encode()


def race_outcome(report: dict) -> str | None:
    """What a writer's report says of race.md: stored, or refused because the other writer holds it (None: wrong)."""
    if RACE in report["added"] + report["changed"] + report["unchanged"]:
        return "race.md stored"
    if "already belongs to" in report["errors"].get(RACE, ""):
        return "race.md: conflict reported"
    return None


def run(base: str, args, env: dict, home: Path) -> tuple[Counter, list[str]]:
    counts: Counter = Counter()
    problems: list[str] = []
    lock = threading.Lock()
    deleted = threading.Event()
    stop = time.monotonic() + args.seconds

    def record(request: str, collection: str, response: httpx.Response | None, ok: bool, what: str = "") -> None:
        with lock:
            counts[(request, collection, response.status_code if response is not None else "no response")] += 1
            if not ok:
                problems.append(f"{request} {collection}: {what or (response.text[:150] if response else '')}")

    def query(number: int) -> None:
        with httpx.Client(base_url=base, timeout=600) as http:
            i = number
            while time.monotonic() < stop:
                collection = ("default", "churn")[i % 2]
                route = "ask" if i % 3 == 0 else "search"   # both routes reach both collections
                body = ({"question": QUESTIONS[i % len(QUESTIONS)], "collection": collection} if route == "ask"
                        else {"query": QUESTIONS[i % len(QUESTIONS)], "k": 5, "collection": collection})
                began_after_delete = deleted.is_set()
                try:
                    response = http.post(f"/v1/{route}", json=body)
                except httpx.HTTPError as exc:
                    record(route, collection, None, False, repr(exc))
                else:
                    gone = collection == "churn" and (began_after_delete or deleted.is_set())
                    ok = (response.status_code == 200 or (response.status_code == 404 and gone)
                          or (response.status_code == 503 and route == "ask" and "retry-after" in response.headers))
                    short = (ok and response.status_code == 200 and route == "search"
                             and len(response.json()["results"]) < 5)
                    record(route, collection, response, ok and not short, "fewer than k results" if short else "")
                i += 1

    def churn() -> None:
        with httpx.Client(base_url=base, timeout=600) as http:
            n = 0
            while time.monotonic() < stop:
                page = (f"churn{n}.md", f"# Gift cards {n}\n\nGift card batch {n} never expires.\n".encode(),
                        "text/markdown")
                for collection in ("default",) + (() if deleted.is_set() else ("churn",)):
                    # race.md goes up in every other epoch of 12 rounds: in the others the CLI can take it
                    race = ([("files", (RACE, race_page(n, "upload"), "text/markdown"))]
                            if collection == "default" and (n // 12) % 2 == 0 else [])
                    response = http.post(f"/v1/collections/{collection}/documents", files=[("files", page)] + race)
                    outcome = race_outcome(response.json()) if race and response.status_code == 201 else None
                    record("upload" + (f" ({outcome})" if outcome else ""), collection, response,
                           response.status_code == 201 and (outcome is not None or not race))
                if n % 2:
                    response = http.delete(f"/v1/collections/default/documents/churn{n - 1}.md")
                    record("delete document", "default", response, response.status_code == 200)
                if n % 24 == 11:   # end of an upload epoch: race.md up for grabs, the CLI can take it
                    response = http.delete(f"/v1/collections/default/documents/{RACE}")
                    record("delete race.md", "default", response, response.status_code in (200, 404))
                if n == 1 and args.distill:
                    response = http.post("/v1/collections/default/distill")
                    record("distill", "default", response, response.status_code == 202)
                if not deleted.is_set() and time.monotonic() > stop - args.seconds / 3:
                    deleted.set()
                    response = http.delete("/v1/collections/churn")
                    record("delete collection", "churn", response, response.status_code == 204)
                n += 1

    def cli_writer() -> None:   # a second writer in its own process: `kbqa ingest` of a folder on `default`
        folder = home / "cli-pages"
        folder.mkdir()
        n = 0
        while time.monotonic() < stop:
            (folder / RACE).write_bytes(race_page(n, "command line"))
            (folder / f"cli{n}.md").write_text(f"# Stickers {n}\n\nSticker sheet {n} ships flat.\n")
            done = subprocess.run([sys.executable, "-m", "serve.cli", "ingest", str(folder), "--collection", "default",
                                   "--json"], env=env, capture_output=True, text=True, timeout=1800)
            if done.returncode != 0:
                with lock:
                    counts[("cli ingest", "default", f"exit {done.returncode}")] += 1
                    problems.append(f"cli ingest: exit {done.returncode}: {done.stderr[-300:]}")
            else:
                outcome = race_outcome(json.loads(done.stdout))
                with lock:
                    counts[(f"cli ingest ({outcome})", "default", "exit 0")] += 1
                    if outcome is None:
                        problems.append(f"cli ingest: race.md neither stored nor reported: {done.stdout[-300:]}")
            n += 1

    threads = [threading.Thread(target=query, args=(n,)) for n in range(args.clients)]
    threads += [threading.Thread(target=churn), threading.Thread(target=cli_writer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts, problems


if __name__ == "__main__":
    main()
