import json
import random

from distill.generator_data import (faq_pairs, grounded_answer, make_example, mined_faq_examples, read_examples,
                                    short_answer)
from ingest.chunker import Chunker
from distill.generator_train import GeneratorTrainConfig, train_generator
from ingest.records import Chunk
from retrieval.answering.engines.ct2 import Ct2Generator, converted_dir, ct2_available
from retrieval.answering.prompt import ABSTENTION, build_messages
from retrieval.answering.engines.local import Generator
from retrieval.answering.records import Passage
from retrieval.answering.registry import current_adapter
from retrieval.model_store import CURRENT
from retrieval.collection import Collection
from tests.fakes import FakeEncoder
from tests.tiny_models import build_tiny_generator

GOLD = {"title": "Billing", "text": "Refunds are paid within five days."}
DISTRACTORS = [{"title": "Teams", "text": "Invite colleagues."}, {"title": "Privacy", "text": "No cookies."}]


def test_example_cites_the_shuffled_gold_position_or_abstains():
    example = make_example("refunds?", "Refunds take five days.", GOLD, DISTRACTORS, 3, random.Random(1))
    n = [p["text"] for p in example["passages"]].index(GOLD["text"]) + 1
    # The target is the gold passage's own words that best match the reference answer, then its citation.
    assert example["target"] == f"Refunds are paid within five days. [{n}]" and len(example["passages"]) == 3
    abstain = make_example("refunds?", None, None, DISTRACTORS, 3, random.Random(1))
    assert abstain["target"] == ABSTENTION and GOLD["text"] not in [p["text"] for p in abstain["passages"]]


def test_grounded_answer_picks_the_passage_sentences_closest_to_the_reference():
    passage = ("Refunds are processed by the billing team. Refunds are paid within five days of the request. "
               "You can see them on the invoice page. Contact us for anything else.")
    reference = "Money comes back within five days; you can see it on the invoice page."
    assert grounded_answer(reference, passage) == ("Refunds are paid within five days of the request. "
                                                   "You can see them on the invoice page.")
    assert grounded_answer("nothing in common", passage) == "Refunds are processed by the billing team."
    assert len(grounded_answer(reference, "word " * 100, max_words=10).split()) == 11  # 10 words + "..."


def test_short_answer_keeps_whole_sentences_within_the_budget():
    assert short_answer("One two three. Four five six. Seven.", max_words=6) == "One two three. Four five six."
    assert short_answer("a " * 100, max_words=5) == "a a a a a ..."


def test_faq_pairs_come_from_question_headings():
    chunks = [Chunk("faq.md", "faq.md", "FAQ", "FAQ > Do you use cookies?", 0,
                    "No. Plausible stores no cookies on visitors' devices at all."),
              Chunk("faq.md", "faq.md", "FAQ", "FAQ > Pricing", 1, "Plans start at nine euros per month for all.")]
    pairs = faq_pairs(chunks)
    assert [(q, a) for q, a, _ in pairs] == [("Do you use cookies?", "No. Plausible stores no cookies on visitors' devices at all.")]


def test_mined_examples_put_each_faq_answer_among_retrieved_passages(tmp_path):
    kb = tmp_path / "kb"
    kb.mkdir()
    questions = [f"Can I export report number {n}?" for n in range(16)]
    (kb / "faq.md").write_text("# FAQ\n\n" + "".join(
        f"## {q}\n\nYes: open Reports, pick report number {n} and press the export button there.\n\n"
        for n, q in enumerate(questions)))
    encoder = FakeEncoder()
    collection = Collection(tmp_path / "c", encoder, create=True)
    collection.ingest(kb, Chunker(encoder.count_tokens))
    examples = mined_faq_examples(collection, n_passages=3)
    assert sorted(e["question"] for e in examples) == sorted(questions)   # in store order
    for example in examples:
        assert len(example["passages"]) <= 3
        if example["target"] != ABSTENTION:   # the gold answer is among the passages and cited by its position
            n = int(example["target"].rsplit("[", 1)[1].rstrip("]"))
            number = example["question"].split()[-1].rstrip("?")
            assert f"pick report number {number} and" in example["passages"][n - 1]["text"]
    assert any(e["target"] == ABSTENTION for e in examples) and any(e["target"] != ABSTENTION for e in examples)
    assert mined_faq_examples(collection, n_passages=3) == examples   # seeded: the same run twice


def test_read_examples_rejects_incomplete_rows(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "q"}) + "\n")
    try:
        read_examples(path)
    except ValueError as exc:
        assert "bad.jsonl:1" in str(exc)
    else:
        raise AssertionError("an incomplete example was accepted")


def test_training_publishes_a_current_adapter_that_serving_loads(tmp_path):
    base = build_tiny_generator(tmp_path / "base")
    rng = random.Random(0)
    examples = [make_example("the answer", "w1 w2", {"title": "a", "text": "w1 w2"},
                             [{"title": "b", "text": "w3"}], 2, rng) for _ in range(4)]
    models = tmp_path / "models"
    assert current_adapter(models) is None
    report = train_generator(base, examples, models, GeneratorTrainConfig(grad_accum=2, lora_r=4), activate=True)
    assert report["version"] == "v0001" and report["examples"] == 4 and len(report["loss_per_step"]) == 2
    adapter = current_adapter(models)
    assert adapter.name == "v0001" and (models / "generator-adapters" / CURRENT).read_text().strip() == "v0001"
    assert json.loads((adapter / "training.json").read_text())["config"]["lora_r"] == 4
    assert not list((models / "generator-adapters").glob(".staging-*"))
    generator = Generator(base, device="cpu", max_new_tokens=3, adapter_dir=adapter, abstain_threshold=0.9)
    assert generator.name == "base+v0001"
    text, _, new_tokens = generator.generate(build_messages("the answer", [Passage("a", "w1 w2")]))
    assert 1 <= new_tokens <= 3
    if ct2_available():   # a core dependency; a GPU machine may run without it (the transformers engine serves)
        # The CPU engine serves the same adapter, merged before its int8 conversion, in a folder of its own.
        merged = converted_dir(models, base, adapter)
        assert merged != converted_dir(models, base) and "v0001" in merged.name
        _, _, new_tokens = Ct2Generator(merged, max_new_tokens=3, abstain_threshold=0.9).generate(
            build_messages("the answer", [Passage("a", "w1 w2")]))
        assert 1 <= new_tokens <= 3
    second = train_generator(base, examples, models, GeneratorTrainConfig(grad_accum=4, lora_r=4), activate=True)
    assert second["version"] == "v0002" and current_adapter(models).name == "v0002"
    third = train_generator(base, examples, models, GeneratorTrainConfig(grad_accum=4, lora_r=4))
    assert third["version"] == "v0003" and not third["activated"] and current_adapter(models).name == "v0002"


def test_serving_picks_the_current_adapter_else_the_shipped_one(tmp_path):
    from retrieval.answering.registry import SHIPPED_ADAPTER_SOURCE, resolve_adapter
    from retrieval.models import SHIPPED_ADAPTER
    from retrieval.prepare import prepare
    from retrieval.model_store import verify

    verify(SHIPPED_ADAPTER_SOURCE, full=True)  # committed whole: every file present with its checksum
    models = tmp_path / "models"
    assert resolve_adapter("auto", models) is None   # not installed: the base model serves
    assert prepare(models, (SHIPPED_ADAPTER,)) == {SHIPPED_ADAPTER: "prepared"}
    verify(models / SHIPPED_ADAPTER, full=True)
    assert resolve_adapter("auto", models) == models / SHIPPED_ADAPTER
    assert resolve_adapter("none", models) is None
    base = build_tiny_generator(tmp_path / "base")
    example = make_example("q", "w1", {"title": "a", "text": "w1"}, [], 1, random.Random(0))
    train_generator(base, [example], models, GeneratorTrainConfig(grad_accum=1, lora_r=4), activate=True)
    assert resolve_adapter("auto", models) == models / "generator-adapters" / "v0001"
    try:
        resolve_adapter(str(tmp_path / "missing"), models)
    except FileNotFoundError as exc:
        assert "missing" in str(exc)
    else:
        raise AssertionError("a missing adapter folder was accepted")
