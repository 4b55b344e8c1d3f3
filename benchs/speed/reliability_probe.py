"""Issue 30's probes, rerun against a real `kbqa serve` the way the outside tester ran them: writers that meet, killed
uploads, writers of different collections, files that would take unbounded work, tenants' conversations and metrics,
a Milvus collection reopened by the next process, and the small contract checks.

    python -m benchs.speed.reliability_probe [--files 50] [--kills 3] [--skip-milvus]

Builds its own KBQA_HOME in a temporary folder (models linked from $KBQA_HOME/models, default ./.kbqa/models), pages
from kb/docs. Prints one row per probe (what the issue saw, what happens now, whether that is the contract) and
writes benchs/results/reliability_probe.md; exits 1 when a probe breaks its contract. Loopback only, bounded.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import httpx

from benchs.common import REPO, publish
from retrieval.answering.engines.cpu import describe as describe_cpu
from retrieval.answering.engines.llama_server import free_port, wait_until_up

ROWS: list[tuple[str, str, str, bool]] = []   # (probe, the issue saw, now, holds the contract)


def row(probe: str, before: str, now: str, ok: bool) -> None:
    ROWS.append((probe, before, now, ok))
    print(f"{'ok ' if ok else 'BAD'} {probe}: {now}", flush=True)


class Server:
    """`kbqa serve` in its own process, which a probe may kill -9."""

    def __init__(self, env: dict, key: str):
        self.env, self.port = env, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Bearer {key}"}

    def __enter__(self) -> "Server":
        self.process = subprocess.Popen([sys.executable, "-m", "serve.cli", "serve", "--port", str(self.port)],
                                        env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until_up(self.process, self.base + "/healthz", 300, "kbqa serve")
        return self

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else self.headers
        return httpx.Client(base_url=self.base, headers=headers, timeout=900)


def upload(http: httpx.Client, collection: str, files: list[tuple[str, bytes]]) -> tuple[httpx.Response, float]:
    start = time.perf_counter()
    response = http.post(f"/v1/collections/{collection}/documents",
                         files=[("files", (name, data, "application/octet-stream")) for name, data in files])
    return response, time.perf_counter() - start


def kb_pages(n: int, prefix: str = "") -> list[tuple[str, bytes]]:
    return [(prefix + p.name, p.read_bytes()) for p in sorted((REPO / "kb" / "docs").glob("*.md"))[:n]]


def cli(env: dict, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "serve.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def expanding_pdf(repeats: int = 10_000) -> bytes:
    """A small PDF whose text layer is ``repeats`` draws of one 100-character form: ~1M characters from ~4 KB."""
    text = "Parcels ship within two working days from the warehouse in Leeds and arrive before the weekend. "
    form = f"BT /F1 10 Tf 10 10 Td ({text}) Tj ET".encode()
    page = zlib.compress(b"/X1 Do\n" * repeats)
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /XObject << /X1 5 0 R >> /Font << /F1 6 0 R >> >> >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(page) + page + b"\nendstream",
        b"<< /Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources << /Font << /F1 6 0 R >> >> "
        b"/Length %d >>\nstream\n" % len(form) + form + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer << /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


# --- the probes ---------------------------------------------------------------------------------------------------
def two_writers(server: Server, env: dict, home: Path, files: int) -> None:
    folder = home / "cli-folder"
    folder.mkdir()
    for name, data in kb_pages(20, "cli-"):
        (folder / name).write_bytes(data)
    (folder / "zz-race.md").write_text("# Race\n\nThe command line's copy of the race page.\n")
    payload = kb_pages(files - 1) + [("zz-race.md", b"# Race\n\nThe upload's copy of the race page.\n")]
    with server.client() as http:
        http.post("/v1/collections", json={"name": "race2"})
        result = {}
        sender = threading.Thread(target=lambda: result.update(response=upload(http, "race2", payload)))
        sender.start()
        time.sleep(0.5)
        done = cli(env, "ingest", str(folder), "--collection", "race2", "--json")
        sender.join()
        response, seconds = result["response"]
        stored = {d["source"] for d in http.get("/v1/collections/race2/documents").json()}
        alive = http.get("/healthz").status_code
    report = response.json() if response.status_code == 201 else {}
    cli_report = json.loads(done.stdout[done.stdout.index("{"):]) if done.returncode == 0 else {}
    # whichever writer came second reports the shared id as its file's error; the first stored it
    conflict = "already belongs to" in (report.get("errors", {}).get("zz-race.md", "")
                                        + cli_report.get("errors", {}).get("zz-race.md", ""))
    lost = len([n for n, _ in payload if n != "zz-race.md" and n not in stored])
    row("two writers, one document id (API upload + CLI ingest)",
        "500 IntegrityError, 49 files lost, connection reset",
        f"upload {response.status_code} ({len(report.get('added', []))} added, {seconds:.0f} s), CLI exit "
        f"{done.returncode} ({len(cli_report.get('added', []))} added); zz-race.md conflict reported: {conflict}; "
        f"upload files lost: {lost}; next request {alive}",
        response.status_code == 201 and done.returncode == 0 and conflict and lost == 0 and alive == 200)


def killed_uploads(env: dict, key: str, files: int, kills: int) -> None:
    for n in range(kills):
        with Server(env, key) as server:
            with server.client() as http:
                if n == 0:
                    http.post("/v1/collections", json={"name": "ghosts"})
                sender = threading.Thread(target=lambda: _ignore(upload, http, "ghosts", kb_pages(files, f"k{n}-")))
                sender.start()
                time.sleep(4)   # inside the ingest: files written, embedding under way
                server.kill()
                sender.join()
    with Server(env, key) as server, server.client() as http:
        response, seconds = upload(http, "ghosts", [("one.md", b"# One\n\nA single page sent after the crashes.\n")])
        stored = len(http.get("/v1/collections/ghosts/documents").json())
    added = response.json().get("added", []) if response.status_code == 201 else []
    row(f"{kills} killed {files}-file uploads, then a 1-file upload",
        "251 files added (ghost commits), commit at 154 s",
        f"{len(added)} file added, {stored} documents stored, {seconds:.1f} s", added == ["one.md"] and stored == 1)


def _ignore(function, *args) -> None:
    try:
        function(*args)
    except httpx.HTTPError:
        pass


def separate_collections(server: Server, files: int) -> None:
    with server.client() as http_a, server.client() as http_b:
        for name in ("slow-a", "quick-b"):
            http_a.post("/v1/collections", json={"name": name})
        result = {}
        slow = threading.Thread(target=lambda: result.update(a=upload(http_a, "slow-a", kb_pages(files, "a-"))))
        slow.start()
        time.sleep(1.0)
        response, seconds = upload(http_b, "quick-b", [("tiny.md", b"# Tiny\n\nStickers ship flat.\n")])
        slow.join()
    row("tiny upload to B while a slow upload writes A", "waited 63 s behind A",
        f"B {response.status_code} in {seconds:.1f} s; A {result['a'][0].status_code} in {result['a'][1]:.0f} s",
        response.status_code == 201 and seconds < result["a"][1])


def unbounded_files(server: Server) -> None:
    deep = b"<html><body>" + b"<div>" * 100_000 + b"deep" + b"</div>" * 100_000 + b"</body></html>"
    cases = [("expanding.pdf", expanding_pdf(), "4 KB PDF, 1M characters: 80 s"),
             ("deep.html", deep, "1.3 MB HTML nested 100k deep: 29 s"),
             ("nospace.txt", b"x" * 1_000_000, "1M characters without spaces: ~82 s of chunking"),
             ("toolong.txt", b"word " * 1_200_000, "6M characters of text: unbounded")]
    with server.client() as http:
        http.post("/v1/collections", json={"name": "hostile"})
        for name, data, before in cases:
            response, seconds = upload(http, "hostile", [(name, data)])
            report = response.json() if response.status_code == 201 else {}
            outcome = "stored" if name in report.get("added", []) else (report.get("errors", {}).get(name, "")[:70]
                                                                        or f"HTTP {response.status_code}")
            row(f"{name} ({len(data) / 1e6:.2f} MB)", before, f"{seconds:.1f} s: {outcome}",
                response.status_code == 201 and seconds < 75)


def tenants(server: Server, keys: dict) -> None:
    with server.client(keys["query_b"]) as b, server.client(keys["query_a"]) as a:
        first = b.post("/v1/ask", json={"question": "How do I add a website?", "collection": "tenant-b",
                                        "conversation_id": "shared-1"}).json()
        b.post("/v1/feedback", json={"answer_id": first["answer_id"], "helpful": False})
        crossed = a.post("/v1/ask", json={"question": "How do I add a website?", "collection": "tenant-a",
                                          "conversation_id": "shared-1"}).json()
    reason = crossed["handoff"]["reason"]
    row("key A sends B's conversation_id after B rated it unhelpful", "B's 'repeated failure' hand-off",
        f"hand-off reason {reason!r}", reason != "repeated failure")
    with server.client(keys["admin_a"]) as admin_a:
        metrics = admin_a.get("/metrics")
    row("/metrics with an admin key bound to A", "names collection B and its size",
        f"HTTP {metrics.status_code}, names B: {'tenant-b' in metrics.text}",
        metrics.status_code == 403 and "tenant-b" not in metrics.text)


def milvus(env: dict, home: Path) -> None:
    env = {**env, "KBQA_VECTOR_STORE": "milvus", "KBQA_MILVUS_URI": str(home / "milvus" / "milvus.db")}
    docs = home / "milvus-docs"
    docs.mkdir()
    for name, data in kb_pages(10):
        (docs / name).write_bytes(data)
    first = cli(env, "ingest", str(docs), "--collection", "mv")
    sorted(docs.iterdir())[0].unlink()
    second = cli(env, "ingest", str(docs), "--collection", "mv")
    search = cli(env, "search", "How do I add a website?", "--collection", "mv")
    row("milvus-lite: ingest, delete a file, ingest again, search (three processes)",
        "second ingest exit 1 (collection 'released'), every search fails",
        f"exits {first.returncode}, {second.returncode}, {search.returncode}",
        (first.returncode, second.returncode, search.returncode) == (0, 0, 0))


def smalls(server: Server, env: dict, home: Path) -> None:
    with server.client() as http:
        huge = http.post("/v1/chat/completions", content=b"x" * 100_000, headers={"content-type": "application/json"})
        shape = "OpenAI's" if isinstance(huge.json().get("error"), dict) else "kbqa's"
        row("413 on /v1/chat/completions", "kbqa's error body", f"{huge.status_code}, {shape} body",
            huge.status_code == 413 and shape == "OpenAI's")
        lax = [("/v1/ask", {"question": "refunds?", "stream": "yes"}), ("/v1/ask", {"question": "refunds?", "k": "5"}),
               ("/v1/ask", {"question": "refunds?", "k": True}),
               ("/v1/feedback", {"answer_id": "0" * 32, "helpful": 0}),
               ("/v1/ask", {"question": "   "}), ("/v1/search", {"query": "\t "})]
        accepted = [body for path, body in lax if http.post(path, json=body).status_code < 400]
        row('"stream": "yes", "k": "5", "k": true, "helpful": 0, blank question and query',
            "all accepted (200)", f"{len(lax) - len(accepted)} of {len(lax)} refused", not accepted)
        report = upload(http, "default", [("flag.json", b'[{"id": true, "text": "A record with id true."}]'),
                                          ("long.json", b'[{"id": "' + b"x" * 5000 + b'", "text": "Long id."}]')])[0]
        errors = report.json().get("errors", {}) if report.status_code == 201 else {}
        true_doc = http.get("/v1/collections/default/documents/True").status_code
        row("record id true; 5,000-character id in an uploaded file", "document 'True'; the long id accepted",
            f"flag.json refused: {'flag.json' in errors}; long.json refused: {'long.json' in errors}; "
            f"GET True {true_doc}", {"flag.json", "long.json"} <= set(errors) and true_doc == 404)
    # `kbqa ingest` killed before its first commit
    fresh = subprocess.Popen([sys.executable, "-m", "serve.cli", "ingest", str(REPO / "kb" / "docs"), "--collection",
                              "killed-early"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = home / "collections" / "killed-early" / "store.sqlite"
    deadline = time.monotonic() + 300
    while not store.exists() and time.monotonic() < deadline and fresh.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)
    fresh.send_signal(signal.SIGKILL)
    fresh.wait(30)
    with server.client() as http:
        listed = [c["collection"] for c in http.get("/v1/collections").json()]
    row("CLI ingest killed before its first commit", "empty collection listed",
        f"listed: {'killed-early' in listed}", "killed-early" not in listed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--files", type=int, default=50, help="files in the big uploads (the issue's 50)")
    parser.add_argument("--kills", type=int, default=3, help="uploads killed before the one-file upload (issue: 5)")
    parser.add_argument("--skip-milvus", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("benchs/results/reliability_probe.md"))
    args = parser.parse_args()
    models = Path(os.environ.get("KBQA_HOME", REPO / ".kbqa")) / "models"
    home = Path(tempfile.mkdtemp(prefix="kbqa-probe-"))
    (home / "models").symlink_to(models.resolve())
    env = {**os.environ, "KBQA_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "KBQA_RATE_LIMIT_PER_MINUTE": "0", "KBQA_AUTH_FAILURES_PER_MINUTE": "0"}
    from serve.auth import KeyStore

    store = KeyStore(home / "keys.sqlite")
    keys = {"admin": store.create("probe", "admin"), "admin_a": store.create("admin-a", "admin", ["tenant-a"]),
            "query_a": store.create("a", "query", ["tenant-a"]), "query_b": store.create("b", "query", ["tenant-b"])}
    store.close()
    try:
        pages = home / "pages"
        pages.mkdir()
        for name, data in kb_pages(10):
            (pages / name).write_bytes(data)
        for name in ("default", "tenant-a", "tenant-b"):
            assert cli(env, "ingest", str(pages), "--collection", name).returncode == 0
        with Server(env, keys["admin"]) as server:
            two_writers(server, env, home, args.files)
            separate_collections(server, args.files)
            unbounded_files(server)
            tenants(server, keys)
            smalls(server, env, home)
        killed_uploads(env, keys["admin"], args.files, args.kills)
        if not args.skip_milvus:
            milvus(env, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    lines = [f"`python -m benchs.speed.reliability_probe --files {args.files} --kills {args.kills}` on "
             f"{describe_cpu()}: a real `kbqa serve` (and `kbqa ingest` processes) on a fresh KBQA_HOME.", "",
             "| probe | the issue saw | now | contract |", "|---|---|---|---|"]
    lines += [f"| {probe} | {before} | {now} | {'holds' if ok else '**broken**'} |" for probe, before, now, ok in ROWS]
    broken = sum(not ok for *_, ok in ROWS)
    lines += ["", f"**Broken: {broken} of {len(ROWS)}**"]
    publish(lines, args.out)
    if broken:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
