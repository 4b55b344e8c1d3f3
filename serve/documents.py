"""Documents uploaded through the API: kept in the collection's uploads/ folder, ingested like any folder.

An upload is written aside and renamed into place; if a file then fails to load (corrupt PDF, bad JSON),
it is taken out again and the version stored before stays, so a bad upload never loses a good document.
"""
from __future__ import annotations

import os
import re
import shutil
import threading
from pathlib import Path

from ingest.loaders import LOADERS
from ingest.pipeline import IngestReport
from retrieval.collection import Collection

UPLOADS = "uploads"
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


class DocumentManager:
    def __init__(self, chunker):
        self.chunker = chunker
        self._lock = threading.Lock()  # one upload or delete at a time: they share the uploads folder

    @staticmethod
    def uploads(collection: Collection) -> Path:
        return collection.directory / UPLOADS

    def upload(self, collection: Collection, files: list[tuple[str, bytes]]) -> IngestReport:
        check_upload(files)
        folder, backups = self.uploads(collection), collection.directory / f"{UPLOADS}.previous"
        folder.mkdir(exist_ok=True)
        with self._lock:
            shutil.rmtree(backups, ignore_errors=True)
            backups.mkdir()
            for name, data in files:
                staged = folder / f".{name}.part"
                with staged.open("wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                if (folder / name).exists():
                    os.replace(folder / name, backups / name)
                os.replace(staged, folder / name)
            try:
                report = collection.ingest(folder, self.chunker)
            except BaseException:   # nothing was committed: put every file back as it was, then report the fault
                self._put_back([name for name, _ in files], folder, backups)
                raise
            self._put_back([name for name, _ in files if name in report.errors], folder, backups)
            shutil.rmtree(backups, ignore_errors=True)
        return report

    @staticmethod
    def _put_back(names: list[str], folder: Path, backups: Path) -> None:
        """Restore what ``uploads/`` held before for these names (their stored versions never changed)."""
        for name in names:
            if (backups / name).exists():
                os.replace(backups / name, folder / name)
            else:
                (folder / name).unlink(missing_ok=True)

    def delete(self, collection: Collection, doc_id: str) -> dict:
        """Remove the file a document came from (every document in it) from the collection."""
        with self._lock:
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
