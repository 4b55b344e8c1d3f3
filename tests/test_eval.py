"""`kbqa eval` (issue 17, 4): figures on the team's own questions, each with the count it was taken over."""
import json

import pytest

from retrieval.answering.prompt import ABSTENTION
from distill.team_eval import evaluate, format_table, read_questions
from serve.service import KbqaService
from serve.wiring import answer_pipeline
from serve.settings import Settings
from tests.fakes import ScriptedGenerator, make_kb


def _write(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_questions_file_errors_name_the_line(tmp_path):
    (tmp_path / "broken.jsonl").write_text('{"question": "a"}\n{oops\n')
    with pytest.raises(ValueError, match=":2: not JSON"):
        read_questions(tmp_path / "broken.jsonl")
    with pytest.raises(ValueError, match=":1: needs a non-empty string 'question'"):
        read_questions(_write(tmp_path / "q.jsonl", [{"question": ""}]))
    with pytest.raises(ValueError, match="gold_ids"):
        read_questions(_write(tmp_path / "q.jsonl", [{"question": "a", "gold_ids": "billing.md"}]))


def test_retrieval_and_answer_figures(tmp_path, fake_encoder):
    generator = ScriptedGenerator("Refunds are paid back within five days [1].")
    service = KbqaService(Settings(home=tmp_path / "home", min_relevance=0.1), fake_encoder, answer_pipeline(Settings(home=tmp_path / "home", min_relevance=0.1), generator=generator))
    service.ingest(make_kb(tmp_path / "kb"), "default")
    questions = read_questions(_write(tmp_path / "q.jsonl", [
        {"question": "How are refunds paid back?", "answer": "Refunds are paid back within five days.",
         "gold_ids": ["billing.md"]},
        {"question": "Invite colleagues from the team settings page", "gold_ids": ["faq/teams.md"]},
        {"question": "Is there a mobile app?", "answerable": False}]))
    retrieval = evaluate(service, questions)
    assert retrieval["metrics"]["hit@5"] == {"value": 1.0, "n": 2} and "token-F1" not in retrieval["metrics"]
    assert retrieval["metrics"]["search seconds"]["n"] == 2
    asked = evaluate(service, questions, ask=True)["metrics"]
    assert asked["token-F1"]["n"] == 1 and asked["token-F1"]["value"] > 0.9
    assert asked["citation precision"]["n"] == 2   # the scripted answer cites [1] for both answerable questions
    assert asked["abstention recall (unanswerable)"] == {"value": 0.0, "n": 1}
    assert asked["false abstention (answerable)"] == {"value": 0.0, "n": 2}
    generator.text = ABSTENTION
    abstaining = evaluate(service, questions, ask=True)["metrics"]
    assert abstaining["abstention recall (unanswerable)"]["value"] == 1.0
    assert abstaining["token-F1"]["value"] == 0.0 and "citation precision" not in abstaining
    table = format_table(evaluate(service, questions, ask=True), before=retrieval)
    assert "| token-F1 | - |" in table and "| hit@5 | 1.000 | 1.000 | 2 |" in table


def test_eval_keeps_to_a_filter(tmp_path, fake_encoder):
    # Issue 28: `kbqa eval --filter` measures one slice (the billing page is the only one with that metadata).
    service = KbqaService(Settings(home=tmp_path / "home"), fake_encoder)
    service.ingest(make_kb(tmp_path / "kb"), "default")
    questions = read_questions(_write(tmp_path / "q.jsonl", [
        {"question": "How are refunds paid back?", "gold_ids": ["billing.md"]},
        {"question": "Invite colleagues from the team settings page", "gold_ids": ["faq/teams.md"]}]))
    sliced = evaluate(service, questions, filter={"title": "Billing"})["metrics"]
    assert sliced["hit@5"] == {"value": 0.5, "n": 2}   # the teams page is outside the slice
    assert evaluate(service, questions)["metrics"]["hit@5"]["value"] == 1.0


def test_a_question_may_carry_its_own_filter(tmp_path, fake_encoder):
    # Issue 28: one file of several products' questions, each measured on its own slice.
    service = KbqaService(Settings(home=tmp_path / "home"), fake_encoder)
    service.ingest(make_kb(tmp_path / "kb"), "default")
    questions = read_questions(_write(tmp_path / "q.jsonl", [
        {"question": "How are refunds paid back?", "gold_ids": ["billing.md"], "filter": {"title": "Billing"}},
        {"question": "Invite colleagues from the team settings page", "gold_ids": ["faq/teams.md"],
         "filter": {"title": "Billing"}}]))
    assert questions[0].filter == {"title": "Billing"}
    assert evaluate(service, questions)["metrics"]["hit@5"] == {"value": 0.5, "n": 2}
    assert evaluate(service, questions, filter={"title": "Teams"})["metrics"]["hit@5"]["value"] == 0.0   # AND-ed
    with pytest.raises(ValueError, match=":1: filter product.\\$like"):
        read_questions(_write(tmp_path / "bad.jsonl", [{"question": "a", "filter": {"product": {"$like": "t"}}}]))
