"""The read side of an ingest: files -> documents -> chunks, diffed against what the store already holds.

Nothing here writes or embeds: ``plan_ingest`` returns what changed (and which files failed, by name), and the
collection (retrieval/collection.py) embeds the new chunks and commits the plan in one transaction.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from ingest.chunker import Chunker
from ingest.language import document_language
from ingest.loaders import LoadError, load_file, supported
from ingest.path_metadata import PathRule
from ingest.records import Chunk, Document
from ingest.store import ChunkStore

log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    collection: str
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)  # source -> reason
    chunks_total: int = 0
    chunks_embedded: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class FileUpdate:
    """A new or changed file, loaded and chunked, ready to replace its stored version."""
    rel: str
    digest: str
    docs: list[Document]
    chunks: list[Chunk]


@dataclass
class IngestPlan:
    root_key: str                     # the resolved folder the files are relative to
    updates: list[FileUpdate]
    removed: list[str]                # files stored under root_key that are gone from it
    report: IngestReport

    @property
    def new_chunks(self) -> dict[str, Chunk]:
        return {c.chunk_id: c for update in self.updates for c in update.chunks}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def walk(root: Path) -> list[Path]:
    """Every file under ``root``, hidden files and folders left out, in a stable order."""
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _check_text(docs: list[Document], rel: str) -> None:
    """SQLite stores UTF-8: a lone surrogate (valid in a JSON string, not in UTF-8) would fail the whole commit."""
    for doc in docs:
        try:
            "".join((doc.doc_id, doc.title, doc.text)).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise LoadError(rel, f"document {doc.doc_id[:80]!r} holds text that is not valid Unicode ({exc.reason})") from exc


def plan_ingest(path: Path, store: ChunkStore, chunker: Chunker, collection: str,
                show_progress: bool = False, files: dict[str, Path] | None = None,
                load: Callable[[Path, str], list[Document]] = load_file,
                metadata: dict[str, dict] | None = None, path_rule: PathRule | None = None) -> IngestPlan:
    """What it takes to bring ``store`` in line with ``path`` (a folder, or one file). A file that cannot be read or
    loaded is reported by name in ``report.errors`` and skipped: its stored version, if any, stays.

    ``files``: only these (name relative to the folder ``path`` -> where the bytes are now, e.g. an upload's staging
    folder), and nothing removed: an upload commits what its sender sent, never what else lies in the folder.
    ``load``: file -> documents; the service's bounds each file's time and characters (ingest/bounded.py).
    ``metadata``: name -> fields every document of that file carries over its own (an upload's metadata part); it
    is part of the file's stored hash, so a change of metadata alone re-commits the file (re-embedding nothing).
    ``path_rule``: fields from the file's folders (ingest/path_metadata.py), under the documents' own, hashed alike."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"nothing to ingest at {path}")
    root = path if path.is_dir() else path.parent
    root_key = str(root.resolve())
    if files is not None:
        sources = dict(files)
    else:
        sources = {p.relative_to(root).as_posix(): p for p in (walk(root) if path.is_dir() else [path])}
    report = IngestReport(collection=collection)
    known = store.file_hashes(root_key)
    updates: list[FileUpdate] = []
    seen: set[str] = set()
    claimed: dict[str, str] = {}   # document id -> the file of this ingest that holds it
    for rel, file in tqdm(sources.items(), desc="reading", disable=not show_progress, unit="file"):
        if not supported(file):
            continue
        seen.add(rel)
        try:
            digest = file_sha256(file)
            extra = (metadata or {}).get(rel) or {}
            folder_fields = path_rule.fields(rel) if path_rule is not None else {}
            if extra or folder_fields:
                added = json.dumps([folder_fields, extra], sort_keys=True).encode()
                digest += "+" + hashlib.sha256(added).hexdigest()[:16]
            if known.get(rel) == digest:
                report.unchanged.append(rel)
                continue
            docs = load(file, rel)
            if extra or folder_fields:
                for doc in docs:
                    doc.metadata = {**folder_fields, **doc.metadata, **extra}
            _check_text(docs, rel)
            for doc in docs:   # citations carry it, filters can use it, and it chooses the collection's encoder
                if "language" not in doc.metadata:
                    doc.metadata["language"] = document_language(doc.title, doc.text, doc.metadata)
            for doc in docs:
                owner = store.doc_owner(doc.doc_id)
                if owner is not None and owner != (root_key, rel):
                    raise LoadError(rel, f"document id {doc.doc_id!r} already belongs to {owner[1]} in {owner[0]}")
                if doc.doc_id in claimed:
                    raise LoadError(rel, f"document id {doc.doc_id!r} is also in {claimed[doc.doc_id]}")
            chunks = list({c.chunk_id: c for d in docs for c in chunker.split(d)}.values())
        except LoadError as exc:
            report.errors[rel] = exc.reason
            continue
        except OSError as exc:
            report.errors[rel] = f"cannot be read ({exc.strerror or exc})"
            continue
        except Exception as exc:  # noqa: BLE001 - a parser failing on a hostile file (deep nesting, a fuzzed
            # PDF, a 5,000-digit number) costs that file only, never the ingest
            log.warning("%s could not be loaded", rel, exc_info=exc)
            report.errors[rel] = f"could not be loaded ({type(exc).__name__}: {str(exc)[:200]})"
            continue
        claimed.update({doc.doc_id: rel for doc in docs})
        updates.append(FileUpdate(rel, digest, docs, chunks))
        (report.changed if rel in known else report.added).append(rel)
    report.removed = sorted(set(known) - seen) if path.is_dir() and files is None else []
    return IngestPlan(root_key, updates, report.removed, report)
