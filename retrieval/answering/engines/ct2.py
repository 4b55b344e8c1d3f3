"""The embedded generator on CTranslate2 with int8 weights: the same prompts and interface as engines/local.py, faster on CPU.

Measured (README): on 2 cores int8 is 1.7x fp32 transformers on both first token and decode; answers cost about
two token-F1 points once the support check is applied (benchs/speed/generator_speed.py, benchs/quality/answer_quality.py).

The int8 model is converted once from the fp32 checkpoint (plus the LoRA adapter, merged) and cached under
``models/generator-ct2/<key>``, where the key hashes the source manifests: a re-prepared base or a new
adapter gets its own conversion, a stale one is never served.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import tempfile
import threading
from pathlib import Path

from retrieval.answering.engines.base import REPETITION_PENALTY, GeneratorEngine
from retrieval.answering.prompt import ABSTENTION
from retrieval.model_store import ModelNotReady, publish_folder, verify

log = logging.getLogger(__name__)

CT2_CACHE = "generator-ct2"
QUANTIZATION = "int8"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json")


def ct2_available() -> bool:
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return False
    return True


def _manifest_hash(folder: Path) -> str:
    return hashlib.sha256((Path(folder) / "kbqa-manifest.json").read_bytes()).hexdigest()[:12]


def converted_dir(models_dir: Path, base_dir: Path, adapter_dir: Path | None = None) -> Path:
    """Where the int8 conversion of (base, adapter) lives; converted on first use, verified after."""
    key = f"{QUANTIZATION}-{_manifest_hash(base_dir)}"
    if adapter_dir is not None:
        key += f"-{Path(adapter_dir).name}-{_manifest_hash(adapter_dir)}"
    target = Path(models_dir) / CT2_CACHE / key
    try:
        verify(target)
        return target
    except ModelNotReady:
        pass
    log.info("converting the generator to CTranslate2 %s (once): %s", QUANTIZATION, target.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=target.parent))
    try:
        _convert(Path(base_dir), adapter_dir and Path(adapter_dir), staging)
        try:
            publish_folder(staging, target, f"CTranslate2 {QUANTIZATION} of {base_dir.name}"
                                 + (f" + {Path(adapter_dir).name}" if adapter_dir else ""))
        except OSError:
            if not target.exists():  # else another process published the same conversion first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    verify(target)
    return target


def _convert(base_dir: Path, adapter_dir: Path | None, staging: Path) -> None:
    from ctranslate2.converters import TransformersConverter

    source = base_dir
    if adapter_dir is not None:
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        verify(adapter_dir)
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        source = staging / "merged"
        PeftModel.from_pretrained(model, adapter_dir).merge_and_unload().save_pretrained(source)
        _copy_tokenizer(base_dir, source)  # the converter reads the vocabulary from the folder it converts
    TransformersConverter(str(source)).convert(str(staging / "model"), quantization=QUANTIZATION, force=True)
    for item in (staging / "model").iterdir():
        item.rename(staging / item.name)
    (staging / "model").rmdir()
    shutil.rmtree(staging / "merged", ignore_errors=True)
    _copy_tokenizer(base_dir, staging)  # self-contained: tokenizer and chat template beside the weights


def _copy_tokenizer(source: Path, target: Path) -> None:
    for name in _TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, target / name)


class Ct2Generator(GeneratorEngine):
    """Greedy generation with CTranslate2 from a folder made by ``converted_dir``; same interface as Generator."""

    def __init__(self, model_dir: Path, max_new_tokens: int = 96, abstain_threshold: float | None = None,
                 threads: int | None = None, compute_type: str = QUANTIZATION):
        import ctranslate2
        from transformers import AutoTokenizer

        model_dir = Path(model_dir)
        verify(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = ctranslate2.Generator(str(model_dir), device="cpu", compute_type=compute_type,
                                           intra_threads=threads or os.cpu_count() or 1)
        self.name = f"{model_dir.name} (ctranslate2 {compute_type})"
        self.max_new_tokens = max_new_tokens
        self.abstain_threshold = abstain_threshold
        self.abstain_token = self.tokenizer.encode(ABSTENTION, add_special_tokens=False)[0]
        self._lock = threading.Lock()  # one generation at a time: the CPU has no spare cores for two

    def _prompt_tokens(self, messages: list[dict]) -> list[str]:
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
        return self.tokenizer.convert_ids_to_tokens(ids)

    def _token_ids(self, prompt: list[str], max_tokens: int, suppress: list[list[str]] | None = None):
        # max_length counts new tokens only (the prompt is not included); the penalty covers generated tokens.
        for step in self.model.generate_tokens(prompt, max_length=max_tokens, sampling_topk=1,
                                               repetition_penalty=REPETITION_PENALTY, return_log_prob=True,
                                               suppress_sequences=suppress):
            yield step.token_id, step.log_prob

    def _gated_ids(self, prompt: list[str]):
        """Token ids, with the AbstentionGate's rule: the abstention may open the answer only if that
        first token is at least ``abstain_threshold`` likely. CTranslate2 has no logits hook, so an
        unsure opening is redone once with the abstention's first token suppressed."""
        steps = self._token_ids(prompt, self.max_new_tokens)
        first = next(steps, None)
        if first is None:
            return
        token_id, log_prob = first
        if (self.abstain_threshold is not None and token_id == self.abstain_token
                and math.exp(log_prob) < self.abstain_threshold):
            steps.close()
            banned = [[self.tokenizer.convert_ids_to_tokens(self.abstain_token)]]
            token_id, _ = next(self._token_ids(prompt, 1, suppress=banned))
            yield token_id
            if token_id == self.tokenizer.eos_token_id:
                return
            prompt = prompt + [self.tokenizer.convert_ids_to_tokens(token_id)]
            steps = self._token_ids(prompt, self.max_new_tokens - 1)
        else:
            yield token_id
        for token_id, _ in steps:
            yield token_id

    def stream(self, messages: list[dict], stats: dict | None = None):
        """Yields decoded text pieces as they are generated; fills stats with token counts at the end."""
        prompt = self._prompt_tokens(messages)
        ids: list[int] = []
        sent = ""
        with self._lock:
            for token_id in self._gated_ids(prompt):
                if token_id == self.tokenizer.eos_token_id:
                    break
                ids.append(token_id)
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                # A multi-byte character split across tokens decodes to U+FFFD until it is whole.
                if len(text) > len(sent) and not text.endswith("\ufffd"):
                    yield text[len(sent):]
                    sent = text
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if len(text) > len(sent):
            yield text[len(sent):]
        if stats is not None:
            stats["prompt_tokens"] = len(prompt)
            stats["new_tokens"] = len(ids)
