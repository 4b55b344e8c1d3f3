"""Shared by the benchmark scripts: datasets in the normalised format, collections built the product's way."""
from __future__ import annotations

import contextlib
import hashlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path


DATASETS = ("emanualqa", "covid_faq_deepset", "techqa_dev", "plausible_docs")
BENCH_HOME = Path(__file__).resolve().parents[1] / ".kbqa-bench"


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


def ranked_docs(hits, depth: int = 10) -> list[str]:
    """A document ranks where its best chunk ranks."""
    seen: list[str] = []
    for hit in hits:
        if hit.chunk.doc_id not in seen:
            seen.append(hit.chunk.doc_id)
    return seen[:depth]


def publish(lines: list[str], out: Path) -> None:
    """Write a benchmark's report (kept in the repo beside the script) and print it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]} if rows else {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_up(server: subprocess.Popen, url: str, wait_s: float, what: str) -> None:
    """Poll ``url`` until it answers 200; fail with the server's last words if it exits or is not up in time."""
    import httpx

    deadline = time.monotonic() + wait_s
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if server.poll() is not None:
            raise RuntimeError(f"{what} exited: {server.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not up after {wait_s:.0f} s")
        time.sleep(0.25)


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
