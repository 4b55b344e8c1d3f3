import json

import pytest

from distill.answerability_train import (AnswerabilityTrainConfig, _rounded, read_pairs,
                                         split_by_question, train_answerability)
from distill.metrics import auc
from retrieval.answering.gates import AnswerabilityGate
from retrieval.answering.answerability import AnswerabilityScorer
from retrieval.answering.prompt import ABSTENTION
from retrieval.answering.records import Passage
from retrieval.answering.registry import current_scorer, resolve_scorer
from tests.fakes import HITS, ScriptedGenerator, pipeline
from tests.tiny_models import build_tiny_sentence_encoder


class FixedScorer:
    """p(holds the answer) per passage, fixed by the test; records the questions it was asked."""

    def __init__(self, scores):
        self.values, self.asked = scores, []

    def scores(self, question, passages):
        self.asked.append((question, [p.text for p in passages]))
        return self.values[: len(passages)]


def test_no_passage_holding_the_answer_abstains_without_generating():
    generator, scorer = ScriptedGenerator("Refunds take a year [1]."), FixedScorer([0.1, 0.3, 0.2])
    answer = pipeline(generator, answerability=scorer, answerability_threshold=0.5).run("refunds?", lambda _: HITS)
    assert answer.abstained and answer.answer == ABSTENTION and answer.grounding == "abstained"
    assert answer.answerability == 0.3 and "answerability" in answer.timings_ms
    assert generator.prompts == []   # the generator never ran
    assert scorer.asked == [("refunds?", [h.chunk.text for h in HITS[:3]])]   # it saw the prompt's passages


def test_a_passage_holding_the_answer_lets_the_generator_answer():
    generator = ScriptedGenerator("Refunds are paid within five days [1].")
    answer = pipeline(generator, answerability=FixedScorer([0.9, 0.1, 0.1]),
                      answerability_threshold=0.5).run("refunds?", lambda _: HITS)
    assert not answer.abstained and answer.grounding == "generated" and answer.answerability == 0.9
    assert pipeline(generator).run("refunds?", lambda _: HITS).answerability is None


def test_answerability_threshold_is_validated():
    with pytest.raises(ValueError, match="answerability_threshold"):
        AnswerabilityGate(FixedScorer([0.5]), threshold=1.5)


def test_auc_and_question_split():
    assert auc([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0 and auc([0.5, 0.5], [1, 0]) == 0.5
    assert auc([0.1, 0.9], [1, 0]) == 0.0
    assert _rounded(auc([0.4], [0])) is None and _rounded(0.123456) == 0.1235   # one class only: null
    pairs = [{"question": f"q{i % 10}", "text": "t", "label": i % 2} for i in range(40)]
    train, held = split_by_question(pairs, 0.3, seed=0)
    assert len({p["question"] for p in held}) == 3
    assert not {p["question"] for p in train} & {p["question"] for p in held}   # no question on both sides


def test_read_pairs_names_the_bad_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps({"question": "q", "text": "t", "label": 1}) + "\n"
                    + json.dumps({"question": "q", "text": "t", "label": 3}) + "\n")
    with pytest.raises(ValueError, match="pairs.jsonl:2: label must be 0 or 1"):
        read_pairs(path)
    path.write_text(json.dumps({"question": "q", "text": "t", "label": 1}) + "\n\n{not json\n")
    with pytest.raises(ValueError, match="pairs.jsonl:3: not JSON"):
        read_pairs(path)
    path.write_text("[1, 2]\n")
    with pytest.raises(ValueError, match="pairs.jsonl:1: a row needs label, question, text"):
        read_pairs(path)
    path.write_text(json.dumps({"question": "q", "text": "t", "label": 1, "target": 1.5}) + "\n")
    with pytest.raises(ValueError, match="pairs.jsonl:1: target must be a number in"):
        read_pairs(path)


def test_resolve_scorer(tmp_path):
    assert resolve_scorer("none", tmp_path) is None
    assert resolve_scorer("auto", tmp_path) is None   # nothing trained: the gate is off
    (tmp_path / "answerability" / "v0001").mkdir(parents=True)
    (tmp_path / "answerability" / "CURRENT").write_text("v0001\n")
    assert resolve_scorer("auto", tmp_path) == tmp_path / "answerability" / "v0001"
    assert resolve_scorer(str(tmp_path), tmp_path) == tmp_path
    with pytest.raises(FileNotFoundError):
        resolve_scorer(str(tmp_path / "missing"), tmp_path)


def test_tiny_scorer_learns_publishes_and_loads(tmp_path):
    """A tiny BERT learns a separable toy task; the run publishes a versioned folder, CURRENT only when asked."""
    base = build_tiny_sentence_encoder(tmp_path / "base")
    pairs = []
    for i in range(24):
        question = ["refund", "invoice", "cookies", "password", "team", "export"][i % 6] + " how"
        pairs.append({"question": question, "title": "Billing", "text": "refunds paid within five days", "label": 1})
        pairs.append({"question": question, "title": "Teams", "text": "invite colleagues from settings", "label": 0})
    config = AnswerabilityTrainConfig(epochs=6, lr=1e-3, batch_size=8, validation_share=0.34)
    report = train_answerability(base, pairs, tmp_path / "models", config, source="test")
    assert report["version"] == "v0001" and not report["activated"] and report["valid_auc"] == 1.0
    assert current_scorer(tmp_path / "models") is None
    folder = tmp_path / "models" / "answerability" / "v0001"
    assert (folder / "kbqa-manifest.json").exists() and json.loads((folder / "training.json").read_text())["pairs"]
    scorer = AnswerabilityScorer.load(folder, base)
    yes, no = scorer.scores("refund how", [Passage("Billing", "refunds paid within five days"),
                                           Passage("Teams", "invite colleagues from settings")])
    assert 0.0 <= no < yes <= 1.0
    again = train_answerability(base, pairs, tmp_path / "models", config, activate=True)
    assert again["version"] == "v0002" and current_scorer(tmp_path / "models") == folder.with_name("v0002")


def test_training_needs_a_positive(tmp_path):
    with pytest.raises(ValueError, match="positive"):
        train_answerability(tmp_path, [{"question": "q", "text": "t", "label": 0}], tmp_path, AnswerabilityTrainConfig())


def test_fully_fine_tuned_scorer_is_stored_in_fp16_and_loads_as_fp32(tmp_path):
    import torch

    base = build_tiny_sentence_encoder(tmp_path / "base")
    pairs = [{"question": "refund how", "text": "refunds paid within five days", "label": 1},
             {"question": "refund how", "text": "invite colleagues", "label": 0},
             {"question": "team how", "text": "invite colleagues", "label": 1},
             {"question": "team how", "text": "refunds paid", "label": 0}]
    config = AnswerabilityTrainConfig(epochs=1, batch_size=4, validation_share=0.5)
    report = train_answerability(base, pairs, tmp_path / "models", config)
    folder = tmp_path / "models" / "answerability" / report["version"]
    assert (folder / "config.json").exists()
    scorer = AnswerabilityScorer.load(folder, base)
    assert next(scorer.model.parameters()).dtype == torch.float32
    assert len(scorer.scores("refund how", [Passage("", "refunds paid")])) == 1


def test_tiny_scorer_learns_a_graded_target_and_reports_auc_on_the_label(tmp_path):
    """Trained on the graded ``target`` (a share in [0, 1]); the validation AUC still reads the 0/1 label."""
    base = build_tiny_sentence_encoder(tmp_path / "base")
    pairs = []
    for i in range(24):
        question = ["refund", "invoice", "cookies", "password", "team", "export"][i % 6] + " how"
        pairs.append({"question": question, "text": "refunds paid within five days", "label": 1, "target": 0.9})
        pairs.append({"question": question, "text": "refunds are a topic", "label": 0, "target": 0.4})
        pairs.append({"question": question, "text": "invite colleagues from settings", "label": 0, "target": 0.0})
    config = AnswerabilityTrainConfig(epochs=6, lr=1e-3, batch_size=8, validation_share=0.34, target="target")
    report = train_answerability(base, pairs, tmp_path / "models", config, source="test")
    assert report["valid_auc"] == 1.0 and report["config"]["target"] == "target"
    scorer = AnswerabilityScorer.load(tmp_path / "models" / "answerability" / report["version"], base)
    best, worst = scorer.scores("refund how", [Passage("", "refunds paid within five days"),
                                               Passage("", "invite colleagues from settings")])
    assert worst < best
