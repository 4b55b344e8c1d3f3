"""The transformers engine's batching (a GPU's default) and precision choice, on a tiny Llama on the CPU."""
import threading

import pytest

from retrieval.answering.engines.local import Generator, resolve_dtype
from retrieval.answering.records import Passage
from retrieval.answering.prompt import build_messages
from tests.tiny_models import build_tiny_generator

QUESTIONS = ["what is the answer", "the answer is in passage 1", "w1 w2 w3 w4 w5 w6 w7 w8 w9 w10 w11 w12",
             "you are a question", "w40 w41", "passages : w7", "is the answer w5 or w6", "w59"]


def messages(question: str) -> list[dict]:
    return build_messages(question, [Passage("w1", "the answer is w2 w3"), Passage("w4", "w5 w6 " + question)])


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    # Clear-cut logits: padding changes the arithmetic a little, and must not change a greedy choice here.
    return build_tiny_generator(tmp_path_factory.mktemp("gen") / "base", initializer_range=0.5)


def ask_together(generator: Generator, questions: list[str]) -> dict[str, tuple]:
    """Every question from its own thread, released at once."""
    start, answers = threading.Barrier(len(questions)), {}

    def ask(question: str) -> None:
        start.wait()
        stats: dict = {}
        pieces = list(generator.stream(messages(question), stats))
        answers[question] = ("".join(pieces), stats["prompt_tokens"], stats["new_tokens"], len(pieces))

    threads = [threading.Thread(target=ask, args=(q,)) for q in questions]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return answers


def count_generate_calls(generator: Generator) -> list[int]:
    """Wrap the model's generate to record each call's batch size."""
    sizes, inner = [], generator.model.generate

    def counting(**kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        return inner(**kwargs)

    generator.model.generate = counting
    return sizes


def test_concurrent_answers_share_batches_and_each_gets_its_own(base):
    solo = Generator(base, device="cpu", max_new_tokens=8, max_batch=1)
    alone = {q: solo.generate(messages(q)) for q in QUESTIONS}
    assert len({text for text, _, _ in alone.values()}) > 1   # the questions do get different answers

    batched = Generator(base, device="cpu", max_new_tokens=8, max_batch=4)
    sizes = count_generate_calls(batched)
    together = ask_together(batched, QUESTIONS)
    assert sorted(together) == sorted(QUESTIONS)
    for question, (text, prompt_tokens, new_tokens, pieces) in together.items():
        assert (text.strip(), prompt_tokens, new_tokens) == alone[question], question
        assert pieces >= 1
    assert sum(sizes) == len(QUESTIONS) and max(sizes) <= 4
    assert len(sizes) < len(QUESTIONS)   # some answers were written together


def test_one_at_a_time_on_the_cpu_by_default(base):
    generator = Generator(base, device="cpu", max_new_tokens=4)
    assert generator.max_batch == 1
    sizes = count_generate_calls(generator)
    ask_together(generator, QUESTIONS[:3])
    assert sizes == [1, 1, 1]


def test_a_failed_batch_reaches_every_caller_and_the_next_batch_runs(base):
    generator = Generator(base, device="cpu", max_new_tokens=4, max_batch=4)
    inner = generator.model.generate

    def failing(**kwargs):
        raise RuntimeError("out of memory")

    generator.model.generate = failing
    errors = []

    def ask(question: str) -> None:
        try:
            generator.generate(messages(question))
        except RuntimeError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=ask, args=(q,)) for q in QUESTIONS[:3]]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == ["out of memory"] * 3
    generator.model.generate = inner
    text, _, new_tokens = generator.generate(messages(QUESTIONS[0]))
    assert new_tokens >= 1


def test_dtype_choice():
    assert resolve_dtype("auto", "cuda") == "float32"   # half precision was slower on a GPU (gpu_check.md)
    assert resolve_dtype("auto", "cpu") == "float32"
    assert resolve_dtype("bfloat16", "cuda") == "bfloat16"
    assert resolve_dtype("float16", "cpu") == "float16"
    with pytest.raises(ValueError, match="dtype"):
        resolve_dtype("int4", "cpu")


def test_bfloat16_weights_when_asked(base):
    import torch

    generator = Generator(base, device="cpu", max_new_tokens=4, dtype="bfloat16")
    assert next(generator.model.parameters()).dtype == torch.bfloat16
    text, prompt_tokens, new_tokens = generator.generate(messages(QUESTIONS[0]))
    assert prompt_tokens > 0 and new_tokens >= 1
