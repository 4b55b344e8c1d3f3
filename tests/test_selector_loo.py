"""Leave-one-dataset-out fitting of the answer models (distill/selector_loo.py): nothing fitted for a set saw its
labels, features come from a scorer of the remaining set, and a killed run resumes. Scorer training is replaced by a
recorder (the real one is the answerability trainer, tested in test_answerability.py); fitting is real."""
import json

import pytest

import distill.selector_loo as loo
from retrieval.answering.gap_detector import GapDetector
from retrieval.answering.selection import SentenceSelector
from tests.fakes import OverlapScorer

SETS = ("alpha", "beta", "gamma")
TASKS = (("reset", "remote"), ("pair", "speaker"), ("mute", "tv"), ("update", "app"), ("charge", "phone"))


def examples() -> list[dict]:
    rows = []
    for name in SETS:
        for n, (verb, thing) in enumerate(TASKS):
            rows.append({"id": f"{name}-{n}", "dataset": name, "kind": "answerable",
                         "question": f"How do I {verb} the {thing}?", "reference": f"Open the menu and {verb} the {thing}.",
                         "passages": [{"context": "Guide", "dense": 0.7,
                                       "text": f"Welcome. Open the menu and {verb} the {thing}. Colours vary."}]})
            rows.append({"id": f"{name}-{n}:gap", "dataset": name, "kind": "gap", "reference": None,
                         "question": f"How do I clean the {thing}?",
                         "passages": [{"context": "Other", "dense": 0.4, "text": "Warranty terms. Shipping is slow."}]})
    return rows


def pairs() -> list[dict]:
    return [{"question": "q", "text": "t", "label": 1, "source": f"{name}:{name}-{n}"} for name in SETS for n in range(3)]


@pytest.fixture
def recorder(monkeypatch):
    """Records which sets each scorer was trained on, and which scorer featurised which set."""
    log = {"trained": [], "featurised": []}

    def train_scorer(rows, models, source, activate, target, out):
        folder = out / "sentence-scorer" / f"v{len(log['trained']) + 1:04d}"
        folder.mkdir(parents=True)
        trained_on = sorted({p["source"].split(":")[0] for p in rows})
        (folder / "sets.json").write_text(json.dumps(trained_on))
        log["trained"].append(trained_on)
        return folder

    def load_scorer(folder, models):
        return folder

    def featurise(rows, folder):
        log["featurised"].append(({r["dataset"] for r in rows}, json.loads((folder / "sets.json").read_text())))
        return real_featurise(rows, OverlapScorer())

    real_featurise = loo.featurise
    monkeypatch.setattr(loo, "train_scorer", train_scorer)
    monkeypatch.setattr(loo, "load_scorer", load_scorer)
    monkeypatch.setattr(loo, "featurise", featurise)
    return log


def test_each_set_gets_models_that_never_saw_it(tmp_path, recorder):
    reports = loo.leave_one_out(examples(), pairs(), tmp_path, tmp_path / "models")
    assert sorted(reports) == list(SETS)
    for name in SETS:
        others = [s for s in SETS if s != name]
        assert reports[name]["trained_on"] == others
        (served,) = (tmp_path / name / "sentence-scorer").iterdir()
        assert json.loads((served / "sets.json").read_text()) == others   # the served scorer: the other sets only
        SentenceSelector.load(tmp_path / name / "selector.json")
        GapDetector.load(tmp_path / name / "gap_detector.json")
        # the selector learnt from the other sets' examples only
        assert reports[name]["selector"]["examples"] == len(TASKS) * len(others)
    # every set's examples were featurised by the scorer of one *other* set, never by its own
    for sets, scorer_sets in recorder["featurised"]:
        assert len(sets) == 1 and len(scorer_sets) == 1 and sets != set(scorer_sets)
    assert len(recorder["featurised"]) == 6   # each set by each of the two others, once
    assert not any((tmp_path / ".by-dataset" / name).exists() for name in SETS)   # scaffolding scorers removed


def test_a_rerun_resumes_without_training_again(tmp_path, recorder):
    loo.leave_one_out(examples(), pairs(), tmp_path, tmp_path / "models")
    trained = len(recorder["trained"])
    (tmp_path / "beta" / "gap_detector.json").unlink()   # killed while writing beta's models
    again = loo.leave_one_out(examples(), pairs(), tmp_path, tmp_path / "models")
    assert again["beta"]["trained_on"] == ["alpha", "gamma"]
    # beta's features and served scorer were kept: nothing is trained again
    assert len(recorder["trained"]) == trained


def test_two_sets_are_refused(tmp_path, recorder):
    with pytest.raises(ValueError, match="three dev sets"):
        loo.leave_one_out([e for e in examples() if e["dataset"] != "gamma"], pairs(), tmp_path, tmp_path / "m")
