"""The gap detector calibrated on a collection's synthetic questions (distill/gap_calibration.py)."""
import numpy as np
import pytest

from distill.gap_calibration import SyntheticSignals, calibrated, lowest_threshold, synthetic_signals
from distill.teacher_questions import SyntheticQuestion
from retrieval.answering.gap_detector import SIGNALS, GapDetector
from retrieval.answering.gates import RelevanceGate
from retrieval.answering.selection import SentenceSelection
from tests.fakes import HITS, OverlapScorer, overlap_selector

TOP_DENSE = SIGNALS.index("top_dense")


def test_lowest_threshold_refuses_at_most_the_allowed_share():
    probs = np.array([0.95, 0.9, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05])
    for limit in (0.0, 0.1, 0.25, 0.5):
        t = lowest_threshold(probs, limit)
        refused = (probs >= t).mean()
        assert refused <= limit
        assert (probs >= np.sort(probs)[::-1][int(limit * len(probs))]).mean() > limit   # one step lower refuses more
    assert lowest_threshold(np.array([]), 0.1) == 1.0


def test_synthetic_questions_are_asked_with_and_without_their_source_document():
    doc_of = {h.chunk.chunk_id: h.chunk.doc_id for h in HITS}
    refunds, cookies = HITS[0].chunk, HITS[1].chunk
    questions = [SyntheticQuestion("How fast are refunds paid?", refunds.chunk_id, refunds.text),
                 SyntheticQuestion("Does Plausible use cookies?", cookies.chunk_id, cookies.text)]
    searched = []

    def search(question):
        searched.append(question)
        return list(HITS)

    signals = synthetic_signals(questions, doc_of, search, RelevanceGate(0.4, 3),
                                SentenceSelection(overlap_selector(), OverlapScorer()), depth=3)
    assert searched == [q.question for q in questions]   # one search per question serves both attempts
    assert signals.answerable.shape == signals.gap.shape == (2, len(SIGNALS))
    # with the whole collection the best passage is the top hit; with the source document out, the next one is
    assert signals.answerable[:, TOP_DENSE].tolist() == pytest.approx([0.8, 0.8])
    assert signals.gap[:, TOP_DENSE].tolist() == pytest.approx([0.6, 0.8])
    gated = synthetic_signals(questions[:1], doc_of, lambda q: HITS[:1], RelevanceGate(0.4, 3),
                              SentenceSelection(overlap_selector(), OverlapScorer()), depth=3)
    assert (len(gated.answerable), len(gated.gap), gated.gated_gap) == (1, 0, 1)   # nothing left: the gate refuses


def _signals(n: int, rng, top_dense: float) -> np.ndarray:
    rows = rng.normal(0.0, 1.0, (n, len(SIGNALS))).astype(np.float32)
    rows[:, 0] = 1.0
    rows[:, TOP_DENSE] = top_dense + rng.normal(0.0, 0.05, n)
    return rows


def test_calibration_keeps_the_false_abstention_limit_and_refit_learns_the_collections_signal():
    rng = np.random.default_rng(0)
    synthetic = SyntheticSignals(_signals(200, rng, 0.8), _signals(200, rng, 0.4))
    # a base detector that reads only noise: its threshold can be calibrated, its skill cannot
    base = GapDetector([1.0 if name == "best_score_logit" else 0.0 for name in SIGNALS], 0.5)
    for how in ("threshold", "refit"):
        detector = calibrated(base, synthetic, how, max_false_abstention=0.05)
        assert detector.report["synthetic_false_abstention"] <= 0.05
        assert np.mean([detector.refuses(s) for s in synthetic.answerable]) <= 0.05
    assert calibrated(base, synthetic, "threshold", 0.05).report["synthetic_gap_recall"] < 0.3
    assert calibrated(base, synthetic, "refit", 0.05).report["synthetic_gap_recall"] > 0.9
    with pytest.raises(ValueError, match="teacher"):
        calibrated(base, SyntheticSignals(synthetic.answerable[:5], synthetic.gap), "threshold")
    with pytest.raises(ValueError, match="calibration"):
        calibrated(base, synthetic, "guess")


def test_synthetic_pairs_grade_the_source_chunks_units_and_take_negatives_from_other_documents():
    from distill.reader_adapt import synthetic_pairs
    from tests.fakes import hit

    source = hit("refunds", "Refunds are paid within five days. Invoices are monthly.", 0.8,
                 heading="Refunds").chunk
    same_doc = hit("refunds", "Refunds need the receipt.", 0.7).chunk
    other = hit("cookies", "Plausible does not use cookies. It is private.", 0.6).chunk
    q = SyntheticQuestion("When are refunds paid?", source.chunk_id, "Refunds are paid within five days.")
    pairs = synthetic_pairs([q], {source.chunk_id: source}, lambda _: [hit("refunds", same_doc.text, 0.7),
                                                                      hit("cookies", other.text, 0.6)])
    by_text = {p["text"]: p for p in pairs}
    assert by_text["Refunds are paid within five days."]["target"] == 1.0
    assert by_text["Refunds are paid within five days."]["label"] == 1.0
    assert by_text["Invoices are monthly."]["target"] == 0.0
    # the other document's units are negatives; the source document's other chunk is no negative (it may answer)
    assert by_text["Plausible does not use cookies."]["target"] == 0.0 and "Refunds need the receipt." not in by_text
    assert {p["source"] for p in pairs} == {source.chunk_id}   # one question's pairs stay on one side of validation
