"""Customers' questions for distillation (issue 17, 3): personal data out, duplicates out, teacher labels."""
import numpy as np

from distill.logged_questions import scrub, teacher_labelled, usable_questions


def test_scrub_replaces_what_the_lexicon_knows():
    text = ("mail jane.doe@example.com or call +44 20 7946 0958, card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 "
            "0130 00, see https://x.io/reset?token=abc and key sk_live_4eC39HqLyjWDarjtT1zdp7dc")
    assert scrub(text) == "mail <email> or call <phone>, card <card>, IBAN <iban>, see <url> and key <token>"
    assert scrub("How do I export 2024 stats?") == "How do I export 2024 stats?"


def test_usable_questions_dedupe_and_drop_fragments():
    assert usable_questions(["How do I  cancel?", "how do i cancel?", "hi", "Mail a@b.co about my bill"]) == [
        "How do I cancel?", "Mail <email> about my bill"]


def test_teacher_labels_each_question_with_its_top_passage():
    questions = np.array([[1.0, 0.0], [0.0, 1.0]])
    passages = np.array([[0.0, 1.0], [1.0, 0.0], [0.7, 0.7]])
    labelled = teacher_labelled(["a b c", "d e f"], questions, passages, ["c0", "c1", "c2"], ["d0", "d1", "d2"])
    assert [(q.chunk_id, q.doc_id, q.kind) for q in labelled] == [("c1", "d1", "logged"), ("c0", "d0", "logged")]
