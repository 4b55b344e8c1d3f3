"""The teacher LLM's synthetic questions: filters, the cache keyed by chunk content, the budget, and a kill mid-run;
on a scripted teacher here, on llama.cpp's real server in tests/test_llama_server.py."""
import pytest

from distill.teacher_questions import (Budget, QuestionCache, chunk_key, filter_questions, teacher_messages,
                                       write_questions)
from ingest.records import Chunk

REFUNDS = Chunk("billing.md", "billing.md", "Billing", "Refunds", 0,
                "Refunds are paid back to the original card within five days. Invoices are emailed monthly.")
EXPORT = Chunk("export.md", "export.md", "Exports", "Download CSV", 0,
               "Open the dashboard and click Export to download your stats as a CSV file.")


class ScriptedTeacher:
    """Answers every chunk with ``replies[chunk title]``; ``fail_after``: raise on the call after that many."""
    name = "scripted-teacher"

    def __init__(self, replies, fail_after=None):
        self.replies, self.fail_after, self.calls = replies, fail_after, []

    def generate(self, messages):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("killed")   # a kill mid-run: nothing after it runs
        self.calls.append(messages)
        title = messages[1]["content"].split("\n\n")[0].split(" > ")[0]
        return self.replies[title], 50, 20


REPLIES = {"Billing": "1. How long until my refund reaches my card?\n2. Refunds\nWhen do I get my invoice?\n"
                      "Here are some questions:\n- How long until my refund reaches my card?",
           "Exports": "How can I download my stats as a CSV file?\nWhat is the airspeed velocity of a swallow?"}


def test_filters_keep_customer_questions_and_count_every_drop():
    seen = set()
    kept, dropped = filter_questions(REPLIES["Billing"].splitlines() + ["Refunds?", "Billing > Refunds?",
                                                                        "Why " + "very " * 40 + "slow?",
                                                                        "What are the refunds mentioned in the passage?"],
                                     REFUNDS, seen)
    assert [q.question for q in kept] == ["How long until my refund reaches my card?", "When do I get my invoice?"]
    assert kept[0].answer == "Refunds are paid back to the original card within five days."
    assert kept[1].answer == "Invoices are emailed monthly." and kept[0].chunk_id == REFUNDS.chunk_id
    assert dropped == {"not a question": 2, "duplicate": 1, "too short": 1, "copies the title or a heading": 1,
                       "too long": 1, "refers to the passage": 1}
    kept, dropped = filter_questions(REPLIES["Exports"].splitlines(), EXPORT, seen)
    assert [q.question for q in kept] == ["How can I download my stats as a CSV file?"]
    assert dropped == {"no answer in the chunk": 1}


def test_the_prompt_shows_the_chunk_with_where_it_sits():
    messages = teacher_messages(REFUNDS)
    assert "up to 3" in messages[0]["content"] and messages[1]["content"].startswith("Billing > Refunds\n\nRefunds are")


def test_cached_chunks_are_never_asked_again_and_a_changed_chunk_is(tmp_path):
    cache = QuestionCache(tmp_path / "q.sqlite")
    teacher = ScriptedTeacher(REPLIES)
    questions, report = write_questions([REFUNDS, EXPORT], teacher, cache)
    assert len(teacher.calls) == 2 and report.asked == 2 and report.cached == 0
    assert report.written == 7 and report.kept == len(questions) == 3
    assert sum(report.dropped.values()) == report.written - report.kept
    again, report = write_questions([REFUNDS, EXPORT], teacher, cache)
    assert len(teacher.calls) == 2 and report.cached == 2 and again == questions
    changed = Chunk("export.md", "export.md", "Exports", "Download CSV", 0, EXPORT.text + " It takes a minute.")
    _, report = write_questions([REFUNDS, changed], teacher, cache)
    assert len(teacher.calls) == 3 and report.asked == 1 and report.cached == 1
    other = ScriptedTeacher(REPLIES)
    other.name = "another-teacher"   # another teacher (or prompt version) is another key
    assert chunk_key(REFUNDS, "another-teacher") != chunk_key(REFUNDS, teacher.name)
    cache.close()


def test_a_kill_mid_run_keeps_every_chunk_written_before_it(tmp_path):
    chunks = [Chunk(f"d{i}.md", f"d{i}.md", "Billing", "", 0, f"Refunds for plan {i} are paid within five days.")
              for i in range(5)]
    cache = QuestionCache(tmp_path / "q.sqlite")
    with pytest.raises(KeyboardInterrupt):
        write_questions(chunks, ScriptedTeacher(REPLIES, fail_after=3), cache)
    cache.close()
    cache = QuestionCache(tmp_path / "q.sqlite")   # a new process opens what the killed one left
    resumed = ScriptedTeacher(REPLIES)
    _, report = write_questions(chunks, resumed, cache)
    assert report.cached == 3 and report.asked == 2 and len(resumed.calls) == 2
    cache.close()


def test_the_budget_samples_chunks_and_stops_on_time(tmp_path):
    chunks = [Chunk(f"d{i}.md", f"d{i}.md", "Billing", "", 0, f"Refunds for plan {i} are paid within five days.")
              for i in range(10)]
    cache = QuestionCache(tmp_path / "q.sqlite")
    _, report = write_questions(chunks, ScriptedTeacher(REPLIES), cache, Budget(max_chunks=4))
    assert report.chunks == 4 and report.asked == 4
    _, again = write_questions(chunks, ScriptedTeacher(REPLIES), cache, Budget(max_chunks=4))
    assert again.cached == 4 and again.asked == 0   # the same seeded sample
    _, timed = write_questions(chunks, ScriptedTeacher(REPLIES), cache, Budget(max_seconds=0))
    assert timed.asked == 0 and timed.cached == 4 and timed.skipped_by_time == 6
    cache.close()


def test_a_failing_teacher_call_is_counted_and_asked_again_next_run(tmp_path):
    class Flaky(ScriptedTeacher):
        def generate(self, messages):
            if not self.calls:
                self.calls.append(messages)
                raise TimeoutError("remote timed out")
            return super().generate(messages)

    cache = QuestionCache(tmp_path / "q.sqlite")
    _, report = write_questions([REFUNDS, EXPORT], Flaky(REPLIES), cache)
    assert report.failed == 1 and report.asked == 1
    _, report = write_questions([REFUNDS, EXPORT], ScriptedTeacher(REPLIES), cache)
    assert report.cached == 1 and report.asked == 1 and report.failed == 0
    cache.close()


@pytest.mark.integration
def test_kbqa_teacher_questions_runs_against_the_configured_endpoint(tmp_path, monkeypatch, capsys):
    import json
    import os
    from pathlib import Path

    from retrieval.model_store import verify
    from retrieval.models import STUDENT_START
    from serve.cli import main
    from tests.fakes import make_kb
    from tests.openai_fault_server import FaultServer

    models = Path(os.environ.get("KBQA_HOME", Path(__file__).resolve().parents[1] / ".kbqa")) / "models"
    verify(models / STUDENT_START)
    home = tmp_path / "home"
    (home / "models").mkdir(parents=True)
    (home / "models" / STUDENT_START).symlink_to((models / STUDENT_START).resolve())   # no teacher LLM prepared
    monkeypatch.setenv("KBQA_HOME", str(home))
    assert main(["ingest", str(make_kb(tmp_path / "kb")), "--json"]) == 0
    capsys.readouterr()
    assert main(["teacher-questions"]) == 2   # no teacher configured: both fixes are named
    err = capsys.readouterr().err
    assert "KBQA_TEACHER_URL" in err and "kbqa prepare --teacher" in err
    # "How soon will my refunds be paid back?" is one that distillation holds out (by its hash): what eval asks.
    with FaultServer(answer="How fast do refunds come back?\nRefunds\nHow soon will my refunds be paid back?") as server:
        monkeypatch.setenv("KBQA_TEACHER_URL", server.url)
        monkeypatch.setenv("KBQA_TEACHER_MODEL", "teacher")
        assert main(["teacher-questions", "--max-chunks", "2", "--json"]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["chunks"] == 2 and report["asked"] == 2 and report["written"] == 6
        assert report["kept"] + sum(report["dropped"].values()) == 6 and len(server.requests) == 2
        assert main(["teacher-questions", "--max-chunks", "2"]) == 0   # the same sample: all from the cache
        assert "2 cached" in capsys.readouterr().out and len(server.requests) == 2
        assert main(["teacher-questions", "--json"]) == 0   # every chunk: only the others are asked
        everything = json.loads(capsys.readouterr().out)
        assert everything["cached"] == 2 and len(server.requests) == everything["chunks"] > 2
        # Translations serve the multilingual encoder only: an English collection's are not asked for.
        assert main(["teacher-questions", "--languages", "de,fr"]) == 0
        assert "no translations: the collection's encoder reads English only" in capsys.readouterr().out
        assert len(server.requests) == everything["chunks"]
        assert main(["teacher-questions", "--languages", "de,xx"]) == 2
        assert "cannot translate questions into xx" in capsys.readouterr().err
    # The label-free health check reads the cache: no teacher runs (the server is gone).
    assert main(["eval", "--synthetic", "--json"]) == 0
    health = json.loads(capsys.readouterr().out)
    assert health["questions"] == 1 and health["metrics"]["hit@1"]["n"] == health["questions"]
    assert 0.0 <= health["metrics"]["MRR@10"]["value"] <= 1.0
    assert main(["eval"]) == 2 and "--synthetic" in capsys.readouterr().err


def test_the_teacher_gguf_is_joined_from_its_parts_and_refused_on_a_wrong_hash(tmp_path):
    import hashlib

    from retrieval.model_store import ModelNotReady
    from retrieval.prepare import join_verified

    parts = []
    for n, data in enumerate((b"GGUF" + b"a" * 5000, b"b" * 7000, b"c" * 3)):
        parts.append(tmp_path / f"part{n:02d}.bin")
        parts[-1].write_bytes(data)
    whole = b"".join(p.read_bytes() for p in parts)
    join_verified(parts, tmp_path / "model.gguf", hashlib.sha256(whole).hexdigest())
    assert (tmp_path / "model.gguf").read_bytes() == whole
    with pytest.raises(ModelNotReady, match="reinstall"):
        join_verified(parts[::-1], tmp_path / "bad.gguf", hashlib.sha256(whole).hexdigest())   # parts out of order
    assert not (tmp_path / "bad.gguf").exists()


def test_a_question_written_with_its_answer_on_one_line_keeps_the_question():
    kept, dropped = filter_questions(["Customer: Can I get a refund on my card? Yes. Refunds are paid back within five days.",
                                      "Refunds are paid back to the original card within five days.",
                                      "Do you have any questions about refunds to your card?",
                                      "Is there a card you would like to get the refund on?",
                                      "Could you send the invoice so I can help you with the refund?",
                                      "Customer 3: How long do refunds to my card take?"], REFUNDS, set())
    assert [q.question for q in kept] == ["Can I get a refund on my card?", "How long do refunds to my card take?"]
    assert dropped == {"not a question": 1, "asks the customer": 3}


def test_questions_that_lean_on_their_document_or_the_customers_situation_are_dropped():
    kept, dropped = filter_questions(["How long until this problem with refunds is fixed?",
                                      "My refund to the card has not arrived. How long should this issue take?",
                                      "Could you tell me more about the refund error you're encountering?",
                                      "Are there workarounds for these issues with card refunds?"], REFUNDS, set())
    assert [q.question for q in kept] == ["My refund to the card has not arrived. How long should this issue take?"]
    assert dropped == {"refers to the passage": 2, "asks the customer": 1}


def test_the_teacher_starts_only_when_a_chunk_needs_asking_and_a_failed_start_ends_the_run(tmp_path, monkeypatch):
    from retrieval.answering.engines import remote
    from retrieval.answering.engines.base import EngineNotStarted
    from serve.settings import Settings
    from serve.wiring import teacher_llm

    started = []

    def refuse(*args, **kwargs):
        started.append(args)
        raise ConnectionError("connection refused")

    monkeypatch.setattr(remote, "RemoteGenerator", refuse)
    settings = Settings(home=tmp_path / "home", teacher_url="http://127.0.0.1:9/v1", teacher_model="teacher")
    cache = QuestionCache(tmp_path / "q.sqlite")
    with teacher_llm(settings) as teacher:
        assert teacher.name == "remote:teacher"
        cache.put(chunk_key(REFUNDS, teacher.name), teacher.name, ["How long do refunds take?"], 1.0)
        _, report = write_questions([REFUNDS], teacher, cache)   # cached: nothing is started
        assert report.cached == 1 and started == []
        with pytest.raises(EngineNotStarted, match="connection refused"):
            write_questions([REFUNDS, EXPORT], teacher, cache)
    assert len(started) == 1 and cache.get(chunk_key(EXPORT, "remote:teacher")) is None
