"""Documents uploaded through the API: ingested from a staging folder, then kept in the collection's uploads/.

An upload is all or nothing from its sender's view: its files are written to ``uploads/.incoming`` and only those
files are ingested; a file that fails to load (corrupt PDF, bad JSON) is that file's error and its stored version
stays. Only committed files move into ``uploads/``. A server killed mid-upload leaves ``.incoming`` behind; the next
writer sweeps it before it writes, so nothing a sender saw fail is ever committed on someone else's behalf.
Writers of one collection take turns through its write lock (retrieval/collection.py); collections never wait for
each other.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from ingest.loaders import LOADERS, metadata_of
from ingest.pipeline import IngestReport
from retrieval.collection import Collection

UPLOADS = "uploads"
INCOMING = ".incoming"
WRITE_WAIT_S = 600.0   # an upload waits this long for another writer of its collection, then 503
MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_FILES = 50
MAX_UPLOAD_BYTES = 64 * 1024 * 1024   # one request, all files, multipart overhead included
# A plain file name: no folders, no leading dot, so it can never leave uploads/.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,150}$")


class UploadRejected(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class UnknownDocument(LookupError):
    """No document with that id in the collection."""


def check_file_count(count: int) -> None:
    """Too many files is too much payload, not a malformed request: 413."""
    if count > MAX_FILES:
        raise UploadRejected(413, f"at most {MAX_FILES} files per upload, got {count}")


def check_upload(files: list[tuple[str, bytes]]) -> None:
    if not files:
        raise UploadRejected(422, "no files in the upload")
    check_file_count(len(files))
    names = [name for name, _ in files]
    if len(set(names)) != len(names):
        raise UploadRejected(422, "the same file name appears twice in one upload")
    for name, data in files:
        if not _SAFE_NAME.match(name or "") or ".." in name:
            raise UploadRejected(422, f"file name {name!r} is not allowed: use letters, digits, '.', '_', '-', ' '")
        if Path(name).suffix.lower() not in LOADERS:
            raise UploadRejected(415, f"{name}: unsupported file type; supported: {', '.join(sorted(LOADERS))}")
        if len(data) > MAX_FILE_BYTES:
            raise UploadRejected(413, f"{name} is larger than {MAX_FILE_BYTES} bytes")


def check_metadata(text: str | None, names: list[str]) -> dict[str, dict] | None:
    """The upload's ``metadata`` part: JSON, {file name: {field: value}}, for files of this upload only; values are
    kept with their types as front matter's are (strings, numbers, booleans, dates, lists of those)."""
    if text is None or not text.strip():
        return None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UploadRejected(422, f"metadata is not JSON ({exc.msg})") from None
    if not isinstance(parsed, dict) or not all(isinstance(v, dict) for v in parsed.values()):
        raise UploadRejected(422, 'metadata must be an object of objects: {"file name": {"field": value}}')
    unknown = sorted(set(parsed) - set(names))
    if unknown:
        raise UploadRejected(422, f"metadata names files not in this upload: {', '.join(unknown)}")
    return {name: metadata_of(fields) for name, fields in parsed.items()}


class DocumentManager:
    def __init__(self, chunker, write_wait_s: float = WRITE_WAIT_S, load=None):
        self.chunker = chunker
        self.write_wait_s = write_wait_s
        self.load = load   # file -> documents (ingest/bounded.py); None: in this process, unbounded

    @staticmethod
    def uploads(collection: Collection) -> Path:
        return collection.directory / UPLOADS

    def upload(self, collection: Collection, files: list[tuple[str, bytes]],
               metadata: dict[str, dict] | None = None) -> IngestReport:
        """``metadata``: file name -> fields its documents carry over their own (check_metadata has checked it)."""
        check_upload(files)
        folder = self.uploads(collection)
        with collection.writing(self.write_wait_s):
            staging = self.sweep(collection)
            staging.mkdir(parents=True)
            for name, data in files:
                with (staging / name).open("wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
            report = collection.ingest(folder, self.chunker, files={name: staging / name for name, _ in files},
                                       load=self.load, metadata=metadata)
            for name, _ in files:   # committed (or unchanged): uploads/ keeps the sender's bytes
                if name not in report.errors:
                    os.replace(staging / name, folder / name)
            shutil.rmtree(staging, ignore_errors=True)
        return report

    @staticmethod
    def sweep(collection: Collection) -> Path:
        """Drop what a killed upload left (its staging folder; files of uploads/ the store never committed, as an
        earlier release left them); returns the empty staging path. Call with the collection's write lock held."""
        folder = collection.directory / UPLOADS
        folder.mkdir(exist_ok=True)
        staging = folder / INCOMING
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(collection.directory / f"{UPLOADS}.previous", ignore_errors=True)   # the old put-back copies
        committed = collection.store.file_hashes(str(folder.resolve()))
        for leftover in folder.iterdir():
            if leftover.name not in committed and leftover.is_file():
                leftover.unlink(missing_ok=True)
        return staging

    def delete(self, collection: Collection, doc_id: str) -> dict:
        """Remove the file a document came from (every document in it) from the collection."""
        with collection.writing(self.write_wait_s):
            document = collection.store.document(doc_id)
            if document is None:
                raise UnknownDocument(f"no document {doc_id!r} in collection {collection.name!r}")
            siblings = [d["doc_id"] for d in collection.store.documents()
                        if (d["root"], d["path"]) == (document["root"], document["path"])]
            collection.remove_file(document["root"], document["path"])
            uploads = self.uploads(collection).resolve()
            if Path(document["root"]) == uploads:
                (uploads / document["path"]).unlink(missing_ok=True)
        return {"removed": siblings, "file": document["path"]}
