"""Which engine runs the generator: CTranslate2 int8 on CPU when it is installed, else transformers.

Both take the same prompts (retrieval/generation/generator.py:build_messages) and stream the same way; see
benchs/generator_speed.py for what each costs and benchs/answer_quality.py for what each answers.
"""
from __future__ import annotations

from pathlib import Path

BACKENDS = ("auto", "ctranslate2", "transformers")


def choose_backend(requested: str) -> str:
    """Resolve ``auto``: CTranslate2 on a CPU-only machine when installed; transformers on a GPU (where fp32/fp16
    is already fast and the int8 conversion was not measured) or when ctranslate2 is missing."""
    if requested not in BACKENDS:
        raise ValueError(f"generator backend must be one of {BACKENDS}, got {requested!r}")
    if requested != "auto":
        return requested
    import torch

    from retrieval.generation.ct2_generator import ct2_available

    return "ctranslate2" if ct2_available() and not torch.cuda.is_available() else "transformers"


def load_generator(models_dir: Path, base_dir: Path, backend: str = "auto", adapter_dir: Path | None = None,
                   max_new_tokens: int = 96, abstain_threshold: float | None = None):
    """The serving generator: base SmolLM2 (+ adapter, merged), on the chosen engine."""
    if choose_backend(backend) == "ctranslate2":
        from retrieval.generation.ct2_generator import Ct2Generator, converted_dir

        return Ct2Generator(converted_dir(models_dir, base_dir, adapter_dir), max_new_tokens=max_new_tokens,
                            abstain_threshold=abstain_threshold)
    from retrieval.generation.generator import Generator

    return Generator(base_dir, max_new_tokens=max_new_tokens, adapter_dir=adapter_dir,
                     abstain_threshold=abstain_threshold)
