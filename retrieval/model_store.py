"""Folders that must never be seen half-written: models, adapters, scorers, distilled encoders, index files.

The ground floor of the project (it imports nothing of kbqa), used by everything that writes or reads such a folder:
- a **manifest** (file sizes and SHA-256 sums) written last: a folder without a complete one was cut off mid-write
  and reads as missing (``verify``);
- **publishing**: build a folder aside, write its manifest, rename it in (``publish_folder``);
- **versions**: ``vNNNN`` folders under a parent with a ``CURRENT`` file naming the one that serves
  (``publish_version``, ``set_current``, ``current_version``, ``prune_versions``);
- **dead writers' leftovers**: a writer names its temporary files ``*.tmp<pid>`` or ``.staging-<pid>``; once that
  process is gone they are swept (``sweep_dead_writers``), a live writer's are left alone.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path

MANIFEST = "kbqa-manifest.json"
CURRENT = "CURRENT"   # in a folder of vNNNN versions: the name of the one that serves
FIX_HINT = "run `kbqa prepare` (or `make setup`) to prepare the models"
# A temporary file or folder of a writer, named after its process id: "index-3.faiss.tmp4242", ".staging-4242".
_WRITER_PID = re.compile(r"(?:\.tmp|^\.staging-)(\d+)$")


class ModelNotReady(RuntimeError):
    """A model folder is missing, incomplete or corrupt."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, source: str) -> None:
    folder = Path(folder)
    files = {
        str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    (folder / MANIFEST).write_text(json.dumps({"source": source, "files": files}, indent=1))


def verify(folder: Path, full: bool = False) -> None:
    """Raise ModelNotReady unless every file in the manifest is present with its size (and hash if ``full``)."""
    manifest_path = Path(folder) / MANIFEST
    if not manifest_path.exists():
        raise ModelNotReady(f"model folder {folder} is missing or incomplete: {FIX_HINT}")
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError) as exc:
        raise ModelNotReady(f"model manifest {manifest_path} is unreadable ({exc}): {FIX_HINT}") from exc
    for name, facts in files.items():
        path = Path(folder) / name
        if not path.is_file() or path.stat().st_size != facts["size"]:
            raise ModelNotReady(f"model file {path} is missing or has the wrong size: {FIX_HINT}")
        if full and sha256(path) != facts["sha256"]:
            raise ModelNotReady(f"model file {path} fails its checksum: {FIX_HINT}")


def publish_folder(staging: Path, target: Path, source: str) -> None:
    """Write the manifest last, then swap the folder in, so a crash never leaves a half model looking whole."""
    write_manifest(staging, source)
    if Path(target).exists():
        shutil.rmtree(target)
    Path(staging).rename(target)


def _versions(parent: Path) -> list[Path]:
    return sorted((p for p in Path(parent).glob("v[0-9]*") if p.name[1:].isdigit()), key=lambda p: int(p.name[1:]))


def next_version(parent: Path) -> str:
    taken = [int(p.name[1:]) for p in _versions(parent)]
    return f"v{max(taken, default=0) + 1:04d}"


def set_current(parent: Path, version: str) -> None:
    """Name ``version`` in ``parent``/CURRENT, atomically: a reader sees the old pointer or the new one."""
    tmp = Path(parent) / f".{CURRENT}.tmp"
    tmp.write_text(version + "\n")
    os.replace(tmp, Path(parent) / CURRENT)


def current_version(parent: Path) -> Path | None:
    """The vNNNN folder that ``parent``/CURRENT names, if both exist."""
    pointer = Path(parent) / CURRENT
    if not pointer.is_file():
        return None
    folder = pointer.parent / pointer.read_text().strip()
    return folder if folder.is_dir() else None


def publish_version(parent: Path, staging: Path, source: str, activate: bool = False) -> str:
    """Publish ``staging`` as the next vNNNN under ``parent`` (manifest last, then the rename) and, with
    ``activate``, make it CURRENT. Every trainer writes its versions this way. Returns the version."""
    version = next_version(parent)
    publish_folder(staging, Path(parent) / version, source)
    if activate:
        set_current(parent, version)
    return version


def pid_alive(pid: int) -> bool:
    """Is a process with this id running (on this machine)? Tells a dead writer's leftovers from a live one's."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # it exists, under another user
        return True
    return True


def writer_pid(path: Path) -> int | None:
    """The process id a temporary file's name carries (``*.tmp<pid>``, ``.staging-<pid>``), if any."""
    match = _WRITER_PID.search(Path(path).name)
    return int(match.group(1)) if match else None


def sweep_dead_writers(folder: Path, pattern: str = "*", alive=pid_alive) -> list[str]:
    """Delete what writers that are gone left in ``folder`` (names matching ``pattern`` that carry a pid whose
    process ``alive`` says is not running). Returns the names deleted."""
    swept = []
    for path in Path(folder).glob(pattern):
        pid = writer_pid(path)
        if pid is None or alive(pid):
            continue
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        swept.append(path.name)
    return swept


def prune_versions(parent: Path, keep: set[str], keep_last: int) -> list[str]:
    """Delete the vNNNN folders under ``parent`` that are neither in ``keep`` nor among the newest ``keep_last``,
    and the staging folders of dead writers. Returns the names deleted."""
    versions = _versions(parent)
    doomed = [p for p in versions[:max(0, len(versions) - keep_last)] if p.name not in keep]
    for folder in doomed:
        shutil.rmtree(folder, ignore_errors=True)
    return [p.name for p in doomed] + sweep_dead_writers(parent, ".staging-*")
