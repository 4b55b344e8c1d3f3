"""Which engine runs the generator: CTranslate2 on CPU when it is installed, else transformers; and at what precision:
int8 only where the CPU has int8 dot-product instructions (engines/cpu.py), float32 elsewhere.

Both take the same prompts (retrieval/answering/prompt.py:build_messages) and stream the same way; see
benchs/speed/generator_speed.py for what each costs and benchs/quality/answer_quality.py for what each answers.
"""
from __future__ import annotations

from pathlib import Path

BACKENDS = ("auto", "ctranslate2", "transformers")
PRECISIONS = ("auto", "int8", "float32")


def choose_precision(requested: str, flags: frozenset[str] | None = None) -> str:
    """Resolve ``auto`` for the CTranslate2 engine from the CPU's flags (None: this machine's)."""
    from retrieval.answering.engines.cpu import has_int8_acceleration

    if requested not in PRECISIONS:
        raise ValueError(f"generator precision must be one of {PRECISIONS}, got {requested!r}")
    if requested != "auto":
        return requested
    return "int8" if has_int8_acceleration(flags) else "float32"


def choose_backend(requested: str) -> str:
    """Resolve ``auto``: CTranslate2 on a CPU-only machine when installed; transformers on a GPU (where fp32/fp16
    is already fast and the int8 conversion was not measured) or when ctranslate2 is missing."""
    if requested not in BACKENDS:
        raise ValueError(f"generator backend must be one of {BACKENDS}, got {requested!r}")
    if requested != "auto":
        return requested
    import torch

    from retrieval.answering.engines.ct2 import ct2_available

    return "ctranslate2" if ct2_available() and not torch.cuda.is_available() else "transformers"


def load_generator(models_dir: Path, base_dir: Path, backend: str = "auto", adapter_dir: Path | None = None,
                   max_new_tokens: int = 96, abstain_threshold: float | None = None, precision: str = "auto",
                   dtype: str = "auto", max_batch: int | None = None):
    """The serving generator: base SmolLM2 (+ adapter, merged), on the chosen engine and precision (CTranslate2's
    ``precision``; transformers' ``dtype``, and its ``max_batch`` answers per batch)."""
    if choose_backend(backend) == "ctranslate2":
        from retrieval.answering.engines.ct2 import Ct2Generator, converted_dir

        # The conversion stores int8 weights; float32 compute dequantises them at load (same file either way).
        return Ct2Generator(converted_dir(models_dir, base_dir, adapter_dir), max_new_tokens=max_new_tokens,
                            abstain_threshold=abstain_threshold, compute_type=choose_precision(precision))
    from retrieval.answering.engines.local import Generator

    return Generator(base_dir, max_new_tokens=max_new_tokens, adapter_dir=adapter_dir,
                     abstain_threshold=abstain_threshold, dtype=dtype, max_batch=max_batch)
