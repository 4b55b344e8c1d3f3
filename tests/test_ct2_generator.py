"""The CTranslate2 engine: conversion cached by source, streaming, and the abstention gate's rule."""
import math

import pytest

pytest.importorskip("ctranslate2", reason="CTranslate2 is a core dependency; a GPU machine that was not given it "
                    "runs the transformers engine only")

from retrieval.model_store import MANIFEST, ModelNotReady
from retrieval.answering.engines.ct2 import Ct2Generator, converted_dir
from retrieval.answering.records import Passage
from retrieval.answering.prompt import build_messages
from retrieval.answering.engines.loading import choose_backend, load_generator
from tests.tiny_models import build_tiny_generator

MESSAGES = build_messages("what is the answer", [Passage("w1", "the answer is w2 w3"), Passage("w4", "w5 w6")])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("ct2")
    base = build_tiny_generator(root / "base")
    return root / "models", base


def test_conversion_is_cached_and_keyed_by_the_source(tiny):
    models, base = tiny
    first = converted_dir(models, base)
    assert (first / "model.bin").is_file() and (first / "tokenizer.json").is_file()
    stamp = (first / "model.bin").stat().st_mtime_ns
    assert converted_dir(models, base) == first
    assert (first / "model.bin").stat().st_mtime_ns == stamp  # reused, not converted again

    (first / MANIFEST).unlink()  # as after a crash mid-conversion: redone, never served half-written
    assert converted_dir(models, base) == first
    assert (first / MANIFEST).is_file()


def test_stream_matches_generate_and_counts_tokens(tiny):
    models, base = tiny
    generator = Ct2Generator(converted_dir(models, base), max_new_tokens=6)
    stats = {}
    pieces = list(generator.stream(MESSAGES, stats))
    text, prompt_tokens, new_tokens = generator.generate(MESSAGES)
    assert "".join(pieces).strip() == text
    assert prompt_tokens == stats["prompt_tokens"] == len(generator._prompt_tokens(MESSAGES))
    assert 0 < new_tokens == stats["new_tokens"] <= 6


def test_a_missing_conversion_folder_is_refused(tmp_path):
    with pytest.raises(ModelNotReady):
        Ct2Generator(tmp_path / "nothing")


class Scripted(Ct2Generator):
    """The real gate logic over scripted model steps: a fresh answer opens with the abstention (p=0.5), or
    with ``w7`` when the abstention is suppressed; every other step is ``w8``."""

    def __init__(self, base, threshold):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(base)
        self.max_new_tokens, self.abstain_threshold = 4, threshold
        self.abstain_token = self.tokenizer.convert_tokens_to_ids("w0")
        self.calls = []

    def _token_ids(self, prompt, max_tokens, suppress=None):
        self.calls.append((len(prompt), max_tokens, suppress))
        fresh = len(self.calls) == 1
        first = "w7" if suppress else "w0" if fresh else "w8"
        yield self.tokenizer.convert_tokens_to_ids(first), math.log(0.5)
        for _ in range(max_tokens - 1):
            yield self.tokenizer.convert_tokens_to_ids("w8"), math.log(0.9)


def test_gate_redoes_an_unsure_abstention_without_it(tiny):
    _, base = tiny
    unsure = Scripted(base, threshold=0.8)
    ids = list(unsure._gated_ids(["a", "b"]))
    assert unsure.tokenizer.convert_ids_to_tokens(ids) == ["w7", "w8", "w8", "w8"]
    assert unsure.calls == [(2, 4, None), (2, 1, [["w0"]]), (3, 3, None)]

    for threshold in (0.4, None):  # p=0.5 passes a 0.4 gate, and no gate at all: the abstention stays
        gated = Scripted(base, threshold)
        assert gated.tokenizer.convert_ids_to_tokens(list(gated._gated_ids(["a"]))) == ["w0", "w8", "w8", "w8"]
        assert len(gated.calls) == 1


def test_backend_choice(tiny):
    models, base = tiny
    assert choose_backend("transformers") == "transformers"
    import torch

    assert choose_backend("auto") == ("transformers" if torch.cuda.is_available() else "ctranslate2")
    with pytest.raises(ValueError, match="backend"):
        choose_backend("onnx")
    assert isinstance(load_generator(models, base, "ctranslate2", max_new_tokens=4), Ct2Generator)


def test_precision_follows_the_cpu_flags():
    from retrieval.answering.engines.loading import choose_precision
    from retrieval.answering.engines.cpu import cpu_flags, cpu_model

    assert choose_precision("auto", frozenset({"avx2", "fma"})) == "float32"          # AVX2-only EPYC
    assert choose_precision("auto", frozenset({"avx2", "avx512f", "avx512_vnni"})) == "int8"
    assert choose_precision("auto", frozenset({"avx2", "amx_int8"})) == "int8"
    assert choose_precision("float32", frozenset({"amx_int8"})) == "float32"
    with pytest.raises(ValueError, match="precision"):
        choose_precision("fp8")
    info = "model name\t: AMD EPYC 9B14\nflags\t\t: fpu avx2 fma\n"
    assert cpu_model(info) == "AMD EPYC 9B14" and cpu_flags(info) == {"fpu", "avx2", "fma"}
