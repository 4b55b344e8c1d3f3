"""The teacher LLM's translations of synthetic questions: the cache keyed by question and language, the budget, a kill
mid-run, and the filters that drop what is not a translation; on a scripted teacher."""
import pytest

from distill.teacher_questions import Budget, QuestionCache, SyntheticQuestion
from distill.teacher_translations import supported, teacher_messages, translate_questions, usable_translation

QUESTIONS = [SyntheticQuestion("How long until my refund reaches my card?", "c1", ""),
             SyntheticQuestion("How can I download my stats as a CSV file?", "c2", ""),
             SyntheticQuestion("Can I invite colleagues to my team?", "c3", "")]
GERMAN = {"How long until my refund reaches my card?": "Wie lange dauert es, bis meine Rückerstattung auf meiner "
                                                       "Karte ist?",
          "How can I download my stats as a CSV file?": "Wie kann ich meine Statistiken als CSV-Datei herunterladen?",
          "Can I invite colleagues to my team?": "Kann ich Kollegen in mein Team einladen?"}
SPANISH = {"How long until my refund reaches my card?": "¿Cuánto tarda mi reembolso en llegar a mi tarjeta?",
           "How can I download my stats as a CSV file?": "How can I download my stats as a CSV file?",   # kept English
           "Can I invite colleagues to my team?": "Sí, puede invitar a sus colegas. " * 8}   # answered instead


class ScriptedTeacher:
    name = "scripted-teacher"

    def __init__(self, fail_after=None):
        self.fail_after, self.calls = fail_after, []

    def generate(self, messages):
        if self.fail_after is not None and len(self.calls) >= self.fail_after:
            raise KeyboardInterrupt("killed")
        self.calls.append(messages)
        replies = GERMAN if "German" in messages[0]["content"] else SPANISH
        return replies[messages[1]["content"]], 30, 15


def test_translations_are_kept_by_language_and_what_is_not_one_is_dropped(tmp_path):
    cache = QuestionCache(tmp_path / "t.sqlite")
    translated, report = translate_questions(QUESTIONS, ["de", "es"], ScriptedTeacher(), cache)
    assert report.asked == 6 and report.kept == 4 and report.dropped == {"not translated": 1, "too long": 1}
    german = [t for t in translated if t.language == "de"]
    assert {t.question for t in german} == set(GERMAN.values())
    assert all(GERMAN[t.source] == t.question for t in german) and {t.chunk_id for t in german} == {"c1", "c2", "c3"}
    assert [t.question for t in translated if t.language == "es"] == [SPANISH[QUESTIONS[0].question]]


def test_a_question_answered_instead_of_translated_is_dropped():
    assert usable_translation(["Bien sûr, je peux vous aider à afficher l'écran d'accueil."],
                              "How do I show the home screen?", "fr") == (None, "not a question")
    assert usable_translation(["テレビのホーム画面を表示するにはどうすればいいですか？"], "How do I show the home screen?",
                              "ja")[1] is None


def test_a_translation_in_another_language_than_asked_is_dropped():
    text, why = usable_translation(["Wie kann ich mein Passwort zurücksetzen, wenn ich die E-Mail nicht mehr habe?"],
                                   "How can I reset my password if I no longer have the email?", "fr")
    assert text is None and why == "another language"
    assert usable_translation(["  "], "Why?", "fr") == (None, "empty")


def test_cached_translations_are_never_asked_again_and_a_question_in_the_language_is_not_translated(tmp_path):
    cache = QuestionCache(tmp_path / "t.sqlite")
    translate_questions(QUESTIONS, ["de"], ScriptedTeacher(), cache)
    again = ScriptedTeacher()
    translated, report = translate_questions(QUESTIONS, ["de"], again, cache)
    assert again.calls == [] and report.cached == 3 and report.kept == 3
    german_question = SyntheticQuestion("Wie kann ich meine Statistiken als CSV-Datei herunterladen?", "c2", "")
    teacher = ScriptedTeacher()
    _, report = translate_questions([german_question], ["de"], teacher, cache)
    assert teacher.calls == [] and report.questions == 1 and report.kept == 0


def test_a_kill_mid_run_keeps_what_was_translated_and_the_budget_bounds_a_run(tmp_path):
    cache = QuestionCache(tmp_path / "t.sqlite")
    with pytest.raises(KeyboardInterrupt):
        translate_questions(QUESTIONS, ["de", "es"], ScriptedTeacher(fail_after=4), cache)
    resumed = ScriptedTeacher()
    _, report = translate_questions(QUESTIONS, ["de", "es"], resumed, cache)
    assert report.cached == 4 and len(resumed.calls) == 2
    # Question-major: a budget of 2 questions leaves both languages of each, and no time at all asks nothing.
    teacher = ScriptedTeacher()
    _, report = translate_questions(QUESTIONS, ["de", "es"], teacher, QuestionCache(tmp_path / "u.sqlite"),
                                    Budget(max_chunks=2))
    assert report.questions == 2 and len(teacher.calls) == 4
    assert len({m[1]["content"] for m in teacher.calls}) == 2
    _, report = translate_questions(QUESTIONS, ["de"], ScriptedTeacher(), QuestionCache(tmp_path / "v.sqlite"),
                                    Budget(max_seconds=0))
    assert report.asked == 0 and report.skipped_by_time == 3


def test_languages_are_named_in_the_prompt_and_an_unknown_one_is_refused():
    assert "Japanese" in teacher_messages("Where is my invoice?", "ja")[0]["content"]
    with pytest.raises(ValueError, match="cannot translate questions into xx"):
        supported(["de", "xx"])
