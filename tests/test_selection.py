"""Answer-sentence selection, the gap detector and the degeneration guard, on hand-checkable fakes."""
import json

import numpy as np
import pytest

from retrieval.answering.gap_detector import SIGNALS, GapDetector, gap_signals
from retrieval.answering.degeneration import degenerate_reason
from retrieval.answering.selection import FEATURES, Selection, SentenceSelector, Unit, split_units
from retrieval.answering.pipeline import AnswerPipeline
from retrieval.answering.gates import RelevanceGate
from tests.fakes import OverlapScorer, ScriptedGenerator, hit, overlap_selector, pipeline

PROCEDURE = ("To export your data, open the dashboard.\n"
             "1. Click Settings.\n2. Choose Export.\n3. Press Download CSV.\n"
             "The file arrives by email within an hour.")


def test_units_join_hard_wrapped_lines_and_keep_list_items_whole():
    text = ("Connect the remote to your TV to operate the\nTV. When you turn it on the remote pairs automatically.\n"
            "- 7 -\n- Press Home.\n- Select Settings.\nThat is all.")
    units = split_units(text)
    assert [u.text for u in units] == ["Connect the remote to your TV to operate the TV.",
                                       "When you turn it on the remote pairs automatically.",
                                       "- Press Home.", "- Select Settings.", "That is all."]
    assert [u.block for u in units] == [None, None, 1, 1, None] and [u.index for u in units] == [0, 1, 2, 3, 4]


def test_selection_text_cites_each_passage_after_its_own_sentences():
    units = [Unit("B one.", 1, 0, None), Unit("A two.", 0, 1, None), Unit("A one.", 0, 0, None),
             Unit("- step", 1, 2, 1)]
    text, cited = Selection(units, [], []).text()
    assert text == "A one. A two. [1]\n\nB one.\n- step [2]" and cited == [1, 2]


def test_choose_keeps_budget_threshold_and_brings_the_whole_procedure():
    units = split_units(PROCEDURE)
    selector = overlap_selector(threshold=0.5, budget_words=100)
    probs = np.array([0.2, 0.1, 0.9, 0.1, 0.3])   # only "2. Choose Export." is above the threshold
    chosen = selector.choose(units, probs)
    assert sorted(u.index for u in chosen) == [1, 2, 3]   # its whole list came with it
    assert sorted(u.index for u in overlap_selector(0.95).choose(units, probs)) == [1, 2, 3]   # min_units=1, whole
    tight = SentenceSelector(selector.weights.tolist(), 0.0, budget_words=3, max_list_items=2)
    assert [u.index for u in tight.choose(units, probs)] == [2]   # a list longer than max_list_items stays cut


def test_section_shape_serves_one_passages_run_around_the_best_unit():
    text = ("Plans renew monthly. You can upgrade at any time. To upgrade your plan: Go to Billing. "
            "Click Upgrade. Choose a plan.\nUpgrades take effect at once. Refunds follow the old plan's terms.")
    units = split_units(text, 0) + split_units("Other passage sentence one. And two.", 1)
    probs = np.full(len(units), 0.1)
    probs[3] = 0.9   # "Click Upgrade.": a step of the colon-introduced procedure
    probs[-1] = 0.8  # the other passage's best never comes in: one passage, contiguous
    lead = SentenceSelector(overlap_selector().weights.tolist(), shape="section", budget_words=3, lead_units=2)
    chosen = sorted(lead.choose(units, probs), key=lambda u: u.index)
    assert {u.passage for u in chosen} == {0}
    # from two units before the best, the budget reached at the best; the procedure it belongs to comes back whole
    assert [u.text for u in chosen] == ["You can upgrade at any time.", "To upgrade your plan: Go to Billing.",
                                        "Click Upgrade.", "Choose a plan."]
    far = SentenceSelector(overlap_selector().weights.tolist(), shape="section", budget_words=1, lead_units=10)
    assert units[3] in far.choose(units, probs)   # the best unit is in even when the lead alone fills the budget
    wide = SentenceSelector(overlap_selector().weights.tolist(), shape="section", budget_words=500, lead_units=0)
    assert [u.index for u in sorted(wide.choose(units, probs), key=lambda u: u.index)] == [2, 3, 4, 5, 6]   # to the passage's end


def test_selector_shape_round_trips_and_bad_shapes_are_refused(tmp_path):
    selector = SentenceSelector(overlap_selector().weights.tolist(), shape="section", budget_words=90, lead_units=3)
    path = tmp_path / "selector.json"
    path.write_text(json.dumps(selector.to_dict()))
    loaded = SentenceSelector.load(path)
    assert (loaded.shape, loaded.budget_words, loaded.lead_units) == ("section", 90, 3)
    with pytest.raises(ValueError, match="shape"):
        SentenceSelector(overlap_selector().weights.tolist(), shape="paragraph")
    with pytest.raises(ValueError, match="lead_units"):
        SentenceSelector(overlap_selector().weights.tolist(), shape="section", lead_units=-1)


def test_select_mode_quotes_the_passages_and_cites_them():
    scorer = OverlapScorer()
    answerer = pipeline(selector=overlap_selector(0.5), sentence_scorer=scorer, min_relevance=0.1, answer_mode="select")
    hits = [hit("billing", "Refunds are paid within five days. Invoices are monthly.", 0.8),
            hit("export", PROCEDURE, 0.7)]
    answer = answerer.run("How do I export data with Download CSV?", lambda _: hits)
    assert answer.grounding == "extractive" and not answer.abstained
    assert answer.answer == ("To export your data, open the dashboard.\n1. Click Settings.\n2. Choose Export.\n"
                             "3. Press Download CSV. [2]")
    assert [c.source for c in answer.citations] == ["export"] and answer.citations[0].n == 2
    assert scorer.calls == [7]   # every unit of both passages, scored in one call
    assert "select" in answer.timings_ms


def test_the_gap_detector_refuses_and_reports_its_probability():
    weights = [0.0] * len(SIGNALS)
    weights[SIGNALS.index("best_score_logit")] = -1.0   # p(gap) = sigmoid(-logit(best score)) = 1 - best
    answerer = pipeline(selector=overlap_selector(0.5), sentence_scorer=OverlapScorer(),
                        gap_detector=GapDetector(weights, threshold=0.5), min_relevance=0.1, answer_mode="select")
    hits = [hit("billing", "Refunds are paid within five days.", 0.8)]
    refused = answerer.run("Which cookies does the tracker set?", lambda _: hits)
    assert refused.abstained and refused.grounding == "abstained" and refused.citations == []
    assert refused.answerability == pytest.approx(0.01, abs=1e-3)
    answered = answerer.run("When are refunds paid?", lambda _: hits)
    assert not answered.abstained and answered.answerability == pytest.approx(0.99, abs=1e-3)


def test_gap_signals_follow_their_names():
    selection = Selection([], [0.3, 0.8], [], [0.9, 0.2, 0.6])
    signals = dict(zip(SIGNALS, gap_signals("refunds paid", [("Billing", "Refunds are paid.", 0.7),
                                                             ("Other", "x", 0.5)], selection)))
    assert signals["bias"] == 1.0 and signals["best_selected"] == pytest.approx(0.8)
    assert signals["top3_score_mean"] == pytest.approx((0.9 + 0.6 + 0.2) / 3)
    assert signals["dense_margin"] == pytest.approx(0.2) and signals["question_coverage"] == 1.0


@pytest.mark.parametrize("text,budget,reason", [
    ("Click Chase Chase Chase Chase [1]", False, "loop"),
    ("Open the app and tap the menu, open the app and tap the menu, open the app and tap the menu.", False,
     "repetition"),
    ("To cancel your plan, open the billing page and choose", True, "truncated"),
    ("Account settings [1]", False, "title"),
    ("[1]", False, "empty"),
    ("Refunds are paid within five days [1].", True, None),
    ("Yes. [1]", False, None),
])
def test_degeneration_reasons(text, budget, reason):
    assert degenerate_reason(text, ["Account settings"], budget) == reason


def test_a_looping_generator_is_never_served_as_generated():
    generator = ScriptedGenerator("Click Chase Chase Chase Chase Chase Chase [1]")
    answerer = pipeline(generator, selector=overlap_selector(0.5), sentence_scorer=OverlapScorer(), min_relevance=0.1)
    hits = [hit("chase", "Click Chase to link your bank account. Chase accounts sync daily.", 0.8)]
    answer = answerer.run("How do I link my Chase bank account?", lambda _: hits)
    assert answer.grounding == "extractive" and answer.fallback_reason == "loop"
    assert "Chase Chase Chase" not in answer.answer and answer.answer.endswith("[1]")
    assert answer.unsupported == ["Click Chase Chase Chase Chase Chase Chase [1]"]


def test_a_generator_cut_by_its_budget_falls_back():
    class Budgeted(ScriptedGenerator):
        max_new_tokens = 10

    answerer = pipeline(Budgeted("To link your account open the settings and then"), min_relevance=0.1)
    link = [hit("link", "Open settings to link your account.", 0.8)]
    answer = answerer.run("How do I link my account?", lambda _: link)
    assert answer.grounding == "extractive" and answer.fallback_reason == "truncated"


def test_bad_selector_files_name_the_fix(tmp_path):
    bad = tmp_path / "selector.json"
    bad.write_text(json.dumps({"features": ["bias"], "weights": [1.0], "threshold": 0.5, "budget_words": 10}))
    with pytest.raises(ValueError, match="selector_train"):
        SentenceSelector.load(bad)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="unusable"):
        GapDetector.load(bad)
    with pytest.raises(ValueError, match="weights"):
        SentenceSelector([1.0], 0.5, 10)


def test_the_shipped_selector_and_gap_detector_load():
    selector, detector = SentenceSelector.load(), GapDetector.load()
    assert len(selector.weights) == len(FEATURES) and 0 < selector.threshold < 1 and selector.budget_words > 0
    assert 0 < detector.threshold <= 1 and detector.report["tune_false_abstention"] <= 0.1


def test_select_mode_needs_its_parts():
    with pytest.raises(ValueError, match="selector"):
        AnswerPipeline(RelevanceGate(0.1), mode="select")
    with pytest.raises(ValueError, match="generator"):
        AnswerPipeline(RelevanceGate(0.1), mode="generate")


def test_fitting_learns_from_the_oracle_and_keeps_false_abstentions_under_the_limit():
    from distill.selector_train import featurise, fit_gap_detector, fit_selector

    answerable = [{"question": f"How do I {verb} the {thing}?", "reference": f"Open the menu and {verb} the {thing}.",
                   "dataset": name, "kind": "answerable",
                   "passages": [{"context": "Guide", "dense": 0.7,
                                 "text": f"Welcome to the guide. Open the menu and {verb} the {thing}. Colours vary."}]}
                  for name in ("a", "b") for verb, thing in (("reset", "remote"), ("pair", "speaker"),
                                                             ("mute", "tv"), ("update", "app"))]
    gaps = [{"question": f"How do I {verb} the {thing}?", "reference": None, "dataset": name, "kind": "gap",
             "passages": [{"context": "Other", "dense": 0.4, "text": "Warranty terms. Shipping takes a week."}]}
            for name in ("a", "b") for verb, thing in (("clean", "screen"), ("mount", "wall"))]
    prepared = featurise(answerable + gaps, OverlapScorer())
    assert [int(p["labels"].sum()) for p in prepared[:len(answerable)]] == [1] * len(answerable)   # the oracle's
    selector = fit_selector(prepared)
    assert selector.report["positives"] == len(answerable)
    for item in prepared[:len(answerable)]:
        probs = selector.probabilities(item["features"])
        assert int(np.argmax(probs)) == 1   # the answering sentence ranks first
    detector = fit_gap_detector(prepared, selector, max_false_abstention=0.0)
    assert detector.report["tune_false_abstention"] == 0.0 and detector.report["tune_gap_recall"] > 0


def test_the_shipped_sentence_scorer_is_committed_whole_and_prepare_installs_it(tmp_path):
    from retrieval.answering.registry import SHIPPED_SENTENCE_SCORER_SOURCE, resolve_sentence_scorer
    from retrieval.models import SHIPPED_SENTENCE_SCORER
    from retrieval.prepare import prepare
    from retrieval.model_store import verify

    verify(SHIPPED_SENTENCE_SCORER_SOURCE, full=True)   # every file present with its checksum
    models = tmp_path / "models"
    assert resolve_sentence_scorer("auto", models) is None
    assert prepare(models, (SHIPPED_SENTENCE_SCORER,)) == {SHIPPED_SENTENCE_SCORER: "prepared"}
    assert resolve_sentence_scorer("auto", models) == models / SHIPPED_SENTENCE_SCORER
    assert resolve_sentence_scorer("none", models) is None
    with pytest.raises(FileNotFoundError, match="sentence scorer"):
        resolve_sentence_scorer(str(tmp_path / "missing"), models)


def test_one_sentence_splitter_keeps_closing_marks_and_line_breaks():
    from retrieval.answering.grounding import split_sentences

    text = 'He said "Stop." Then he left. See (page 3.) Next!\nA new line e.g. this one. 3 items.'
    assert split_sentences(text) == ['He said "Stop."', "Then he left.", "See (page 3.)", "Next!",
                                     "A new line e.g. this one.", "3 items."]


UPGRADE = ("To upgrade your email marketing plan: Go to Email Marketing in your site's dashboard. Under Monthly Balance "
           "click Upgrade. Choose a plan that works best for you and checkout.\nPlans renew every month.")


def test_a_colon_intro_and_its_steps_are_one_procedure_that_comes_back_whole():
    units = split_units(UPGRADE)
    assert [u.procedure for u in units] == [1, 1, 1, None] and [u.block for u in units] == [None] * 4
    probs = np.array([0.9, 0.1, 0.8, 0.2])   # the intro and the last step chosen, the middle step not (issue 27)
    chosen = overlap_selector(threshold=0.5, budget_words=100).choose(units, probs)
    assert sorted(u.index for u in chosen) == [0, 1, 2]
    text, _ = Selection(chosen, [], []).text()
    assert "Under Monthly Balance click Upgrade." in text and "renew" not in text
    # A line ending with the colon announces the rest of its paragraph, list items included.
    units = split_units("To reset the remote:\nPress and hold Back.\n- Wait five seconds.\n\nIt pairs by itself.")
    assert [u.procedure for u in units] == [1, 1, 1, None] and [u.block for u in units] == [None, None, 1, None]
    # A callout label, a clock time and a URL announce nothing.
    for text in ("Important:\nKeep the receipt. Refunds take five days.", "Open at 10:30 daily. Ask us.",
                 "See https://kbqa.io now. Then sign in."):
        assert all(u.procedure is None for u in split_units(text)), text


def test_glued_sentences_are_split_and_abbreviations_and_domains_are_not():
    from retrieval.answering.grounding import split_sentences

    assert split_sentences("It is free for all users.You can start now.") == ["It is free for all users.",
                                                                              "You can start now."]
    assert split_sentences("Important:Wix Stores sells online.") == ["Important:", "Wix Stores sells online."]
    for text in ("Use a short name, e.g.Kbqa works.", "Visit kbqa.io today.", "Made in the U.S.A for you.",
                 "Open at 10:30 daily.", "See https://Kbqa.io now."):
        assert split_sentences(text) == [text]


def test_a_unit_repeating_the_title_or_a_heading_is_never_a_candidate():
    from retrieval.answering.selection import scored_units

    text = "When is someone infectious?\nThe onset of viral shedding is not yet known. Ask your doctor."
    units, scores, features = scored_units("When is someone infectious?",
                                           [("When is someone infectious?", text, 0.8)], OverlapScorer())
    assert [u.text for u in units] == ["The onset of viral shedding is not yet known.", "Ask your doctor."]
    assert len(scores) == len(features) == 2
    units, _, _ = scored_units("refunds", [("Billing > Refunds", "Refunds\nRefunds are paid in five days.", 0.8)],
                               OverlapScorer())
    assert [u.text for u in units] == ["Refunds are paid in five days."]
