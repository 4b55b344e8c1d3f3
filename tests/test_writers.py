"""Writers that meet (issue 30): two processes on one collection, a killed upload, writers of different collections,
files that would take unbounded work, and a Milvus collection reopened by the next process."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ingest.bounded import BoundedLoader
from ingest.chunker import Chunker
from ingest.loaders import LoadError
from ingest.records import Document
from serve.app import create_app
from serve.service import KbqaService
from serve.settings import Settings
from tests.fakes import FakeEncoder, local_client, make_kb

REPO = Path(__file__).resolve().parents[1]


def writer(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.writer_process", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen, timeout: float = 120) -> dict:
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"the writer never reached {path.name}"
        time.sleep(0.05)


def page(name: str, words: str) -> tuple[str, bytes, str]:
    return (name, f"# {name}\n\n{words}\n".encode(), "text/markdown")


def upload(client, *files, collection="default"):
    return client.post(f"/v1/collections/{collection}/documents", files=[("files", f) for f in files])


@pytest.fixture
def served(tmp_path, fake_encoder):
    settings = Settings(home=tmp_path / "home", write_wait_s=120, load_timeout_s=20)
    service = KbqaService(settings, fake_encoder)
    service.ingest(make_kb(tmp_path / "kb"), "default")
    with local_client(create_app(settings, service)) as client:
        yield client, service, tmp_path / "home" / "collections"


def test_an_upload_meeting_a_cli_ingest_of_the_same_document_loses_nothing(served, tmp_path):
    # Issue 30, 1: the upload answered 500 (UNIQUE constraint failed: documents.doc_id) and lost its other files.
    client, service, collections = served
    folder = tmp_path / "cli-docs"
    folder.mkdir()
    (folder / "zz-race.md").write_text("# Race\n\nThe command line's version of the race page.\n")
    (folder / "cli-only.md").write_text("# CLI\n\nA page only the command line ingests, about gift wrapping.\n")
    ready = tmp_path / "cli.ready"
    cli = writer("ingest", str(collections / "default"), str(folder), "--ready", str(ready), "--encode-sleep", "3")
    wait_for(ready, cli)   # the other process is inside its ingest, past planning, not committed yet
    response = upload(client, page("zz-race.md", "The upload's version of the race page."),
                      page("api-one.md", "Parcels ship in recycled boxes."), page("api-two.md", "Gift cards never expire."))
    cli_report = finished(cli)
    assert response.status_code == 201, response.text
    report = response.json()
    # The later writer waited for the first and planned against its commit: the shared id is that file's error.
    assert sorted(cli_report["added"]) == ["cli-only.md", "zz-race.md"] and not cli_report["errors"]
    assert sorted(report["added"]) == ["api-one.md", "api-two.md"]
    assert "zz-race.md" in report["errors"] and "already belongs to" in report["errors"]["zz-race.md"]
    sources = {d["source"] for d in client.get("/v1/collections/default/documents").json()}
    assert {"api-one.md", "api-two.md", "cli-only.md", "zz-race.md"} <= sources
    assert client.get("/healthz").status_code == 200   # the connection and the server carry on


def test_a_killed_upload_is_never_committed_by_the_next_one(served):
    # Issue 30, 2: five killed uploads came back as "251 files added" on the next one-file upload.
    client, service, collections = served
    victim = writer("upload-and-die", str(collections / "default"), "ghost-a.md", "ghost-b.md")
    victim.communicate(timeout=120)
    assert victim.returncode == -9
    uploads = collections / "default" / "uploads"
    assert any(uploads.rglob("ghost-a.md")), "the killed upload should have left its files behind"
    (uploads / "legacy-ghost.md").write_text("# Legacy\n\nLeft in place by an upload killed under an older kbqa.\n")
    report = upload(client, page("real.md", "Returns are accepted within thirty days.")).json()
    assert report["added"] == ["real.md"] and not report["errors"]
    sources = {d["source"] for d in client.get("/v1/collections/default/documents").json()}
    assert "real.md" in sources and not sources & {"ghost-a.md", "ghost-b.md", "legacy-ghost.md"}
    assert sorted(p.name for p in uploads.iterdir()) == ["real.md"]   # swept, the staging folder included


class GatedEncoder(FakeEncoder):
    """Blocks on any text holding GATED until released: an upload that is slow for as long as the test wants."""

    def __init__(self):
        super().__init__()
        self.entered, self.release = threading.Event(), threading.Event()

    def encode(self, texts, batch_size=64, show_progress=False):
        if any("GATED" in t for t in texts):
            self.entered.set()
            assert self.release.wait(60)
        return super().encode(texts, batch_size, show_progress)


def test_writers_of_different_collections_never_wait_for_each_other(tmp_path):
    # Issue 30, 3: a tiny upload to collection B waited 63 s behind a slow upload to collection A.
    encoder = GatedEncoder()
    settings = Settings(home=tmp_path / "home", write_wait_s=1)
    service = KbqaService(settings, encoder)
    service.ingest(make_kb(tmp_path / "kb"), "alpha")
    service.ingest(make_kb(tmp_path / "kb"), "beta")
    with local_client(create_app(settings, service)) as client:
        slow = threading.Thread(target=upload, args=(client, page("slow.md", "GATED slow page")), daemon=True,
                                kwargs={"collection": "alpha"})
        slow.start()
        assert encoder.entered.wait(30)
        try:
            other = upload(client, page("quick.md", "A quick page about stickers."), collection="beta")
            assert other.status_code == 201 and other.json()["added"] == ["quick.md"]
            # the same collection waits for its writer (write_wait_s), then says so: 503 with Retry-After
            busy = upload(client, page("second.md", "Another page."), collection="alpha")
            assert busy.status_code == 503 and busy.headers["retry-after"] and "being written" in busy.json()["error"]
        finally:
            encoder.release.set()
            slow.join(30)


def test_the_write_lock_holds_across_processes_per_collection(served, tmp_path):
    client, service, collections = served
    service.ingest(make_kb(tmp_path / "kb"), "other")
    service.documents.write_wait_s = 0.5
    ready = tmp_path / "hold.ready"
    holder = writer("hold", str(collections / "default"), "6", "--ready", str(ready))
    wait_for(ready, holder)
    try:
        assert upload(client, page("x.md", "Waits for the other process.")).status_code == 503
        assert upload(client, page("y.md", "Another collection."), collection="other").status_code == 201
    finally:
        finished(holder)
    assert upload(client, page("x.md", "Now it goes through.")).status_code == 201


def deep_html(depth: int = 100_000) -> bytes:
    return b"<html><body>" + b"<div>" * depth + b"deep" + b"</div>" * depth + b"</body></html>"


def test_a_file_that_takes_too_long_to_load_is_its_own_error(tmp_path):
    # Issue 30, 4: a 1.3 MB HTML nested 100k deep took 29 s, holding the whole ingest.
    (tmp_path / "deep.html").write_bytes(deep_html())
    (tmp_path / "fine.md").write_text("# Fine\n\nA normal page.\n")
    loader = BoundedLoader(timeout_s=1.0)
    with pytest.raises(LoadError, match="took longer than 1 s"):
        loader(tmp_path / "deep.html", "deep.html")
    # the worker that was killed is replaced: the next file loads
    assert loader(tmp_path / "fine.md", "fine.md")[0].title == "Fine"


def test_extracted_text_is_capped_per_file_and_reported_beside_good_files(tmp_path, fake_encoder):
    settings = Settings(home=tmp_path / "home", max_file_chars=5000, load_timeout_s=2)
    service = KbqaService(settings, fake_encoder)
    service.ingest(make_kb(tmp_path / "kb"), "default")
    with local_client(create_app(settings, service)) as client:
        report = upload(client, ("huge.txt", b"word " * 2000, "text/plain"), ("deep.html", deep_html(), "text/html"),
                        page("fine.md", "Parcels ship within two days.")).json()
    assert report["added"] == ["fine.md"]
    assert "more than 5,000 characters" in report["errors"]["huge.txt"]
    assert "took longer than 2 s" in report["errors"]["deep.html"]
    service.close()


def test_chunking_text_without_spaces_is_linear(fake_encoder):
    # Issue 30, 4: ~82 us a character: the splitter measured every character with one tokenizer call.
    calls = []

    def count(text: str) -> int:
        calls.append(len(text))
        return max(1, len(text) // 4)

    chunker = Chunker(count, chunk_tokens=200, overlap_tokens=20)
    for n in (20_000, 80_000):
        calls.clear()
        text = "".join(chr(ord("a") + (i * 7919) % 26) for i in range(n))
        chunks = chunker.split(Document(doc_id="d", source="d", title="d", text=text))
        assert text.startswith(chunks[0].text) and text.endswith(chunks[-1].text)
        assert all(c.text in text for c in chunks) and sum(len(c.text) for c in chunks) >= n
        assert len(calls) < 200 + n // 100, f"{len(calls)} tokenizer calls for {n} characters"


@pytest.mark.skipif(not all(__import__("importlib").util.find_spec(m) for m in ("pymilvus", "milvus_lite")),
                    reason="pip install kbqa[milvus] (the test extra has it)")
def test_a_milvus_collection_written_by_one_process_is_usable_by_the_next(tmp_path):
    # Issue 30, 6: the second `kbqa ingest` (a new process) failed: "Collection ... is in state 'released'".
    kb = make_kb(tmp_path / "kb")
    uri, directory = str(tmp_path / "milvus.db"), str(tmp_path / "home" / "mv")
    first = finished(writer("milvus", uri, directory, "ingest", str(kb)))
    assert first["added"]
    removed = kb / "privacy.md"
    removed.unlink()
    again = finished(writer("milvus", uri, directory, "ingest", str(kb)))
    assert again["removed"] == [removed.name]
    found = finished(writer("milvus", uri, directory, "search", "refunds paid back"))
    assert found and removed.name not in found


def test_an_ingest_killed_before_its_first_commit_leaves_no_collection_listed(tmp_path, fake_encoder):
    # Issue 30, 7: `kbqa ingest` killed before its first commit left an empty collection listed.
    home = tmp_path / "home"
    ready = tmp_path / "ingest.ready"
    cli = writer("ingest", str(home / "collections" / "fresh"), str(make_kb(tmp_path / "kb")), "--ready", str(ready),
                 "--encode-sleep", "60")
    wait_for(ready, cli)
    cli.kill()
    cli.wait(30)
    service = KbqaService(Settings(home=home), fake_encoder)
    assert "fresh" not in service.collection_names()
    report = service.ingest(tmp_path / "kb", "fresh")   # the name is free: the next ingest makes the collection
    assert report.added and "fresh" in service.collection_names()
    created = service.create_collection("empty-on-purpose")
    assert created.store.counts()["chunks"] == 0 and "empty-on-purpose" in service.collection_names()
    service.close()
