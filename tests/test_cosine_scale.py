"""Issue 29: the multilingual encoder's cosines mapped onto the scale the selector and gap detector were fitted on."""
import numpy as np
import pytest

from retrieval.answering.cosine_scale import CosineScale, on_scale
from retrieval.answering.gap_detector import SIGNALS, GapDetector
from tests.fakes import OverlapScorer, hit, overlap_selector, pipeline


def test_quantile_matching_maps_one_spread_onto_the_other_and_keeps_order_beyond_it():
    rng = np.random.default_rng(0)
    scale = CosineScale.fit(list(rng.uniform(0.8, 0.9, 2000)), list(rng.uniform(0.3, 0.7, 2000)))
    assert scale(0.85) == pytest.approx(0.5, abs=0.02)
    assert scale(0.81) < scale(0.85) < scale(0.89)
    assert scale(0.95) == pytest.approx(scale.target[-1] + 0.95 - scale.source[-1])   # shifted, not clipped
    assert scale(0.5) < scale(0.6) < scale.target[0]


def test_a_broken_scale_is_refused_with_the_command_that_refits_it(tmp_path):
    with pytest.raises(ValueError, match="non-decreasing"):
        CosineScale((0.9, 0.8), (0.1, 0.2))
    (tmp_path / "scale.json").write_text("{\"source\": [0.1]}")
    with pytest.raises(ValueError, match="fit_cosine_scale"):
        CosineScale.load(tmp_path / "scale.json")


def test_the_answer_models_read_mapped_cosines_and_citations_keep_the_encoders_own():
    weights = [0.0] * len(SIGNALS)
    weights[SIGNALS.index("bias")], weights[SIGNALS.index("top_dense")] = 6.0, -10.0   # p(gap) falls as cosine rises
    answerer = pipeline(selector=overlap_selector(0.5), sentence_scorer=OverlapScorer(),
                        gap_detector=GapDetector(weights, threshold=0.5), min_relevance=0.1, answer_mode="select")
    hits = [hit("billing", "Refunds are paid within five days.", 0.88)]
    assert not answerer.run("When are refunds paid?", lambda _: hits).abstained   # 0.88 as it is: p(gap) 0.06
    scale = CosineScale((0.7, 0.95), (0.2, 0.7))   # 0.88 -> 0.56: p(gap) 0.60
    events = list(answerer.stream("When are refunds paid?", lambda _: hits, cosine_scale=scale))
    assert events[-1][1].abstained
    assert hits[0].dense_score == 0.88 and on_scale(hits, None) is hits
    assert on_scale(hits, scale)[0].dense_score == pytest.approx(0.56)


def test_the_shipped_multilingual_scale_maps_e5s_cosines_into_minilms_range():
    scale = CosineScale.load()
    assert np.all(np.diff(scale.source) >= 0) and np.all(np.diff(scale.target) >= 0)
    assert 0.2 < scale(0.85) < 0.8 and scale.source[0] > scale.target[0]


def test_a_distilled_encoders_map_composes_with_the_shipped_one_and_reads_the_floor_back():
    own = CosineScale((0.4, 0.8), (0.84, 0.92))       # a distilled student's cosines onto e5's
    shipped = CosineScale((0.84, 0.92), (0.34, 0.76))  # e5's onto MiniLM's
    assert own.then(shipped)(0.6) == pytest.approx(shipped(own(0.6)))
    assert own.inverse()(0.84) == pytest.approx(0.4)   # e5's floor, on the student's scale
    assert own.inverse()(own(0.55)) == pytest.approx(0.55)
