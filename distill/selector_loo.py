"""The answer models as a new customer gets them: fitted with one dev set left out (issue 27's figure that counts).

    python -m distill.selector_loo --examples distill/data/selector_examples.jsonl \
        --pairs distill/data/sentence_pairs.jsonl --out .kbqa-bench/loo

For each dev set S, ``OUT/S/`` gets the sentence scorer, the selector and the gap detector that shipping would give a
customer whose knowledge base is S, had S's questions never been labelled: nothing in it saw S's tune split.
``benchs/quality/answer_trust.py --loo OUT`` answers S with them.

- The scorer ``OUT/S/sentence-scorer/vNNNN`` is trained on the (question, sentence) pairs of the other sets.
- The selector and gap detector learn from scores on questions their scorer never saw (as serving meets them, see
  selector_train.py): here crossed by *dataset*, so the scores also come from a domain the scorer never saw. With
  the other sets A and B, A's examples are featurised by a scorer trained on B's pairs alone, and B's by A's.
  Those per-dataset scorers are scaffolding under ``OUT/.by-dataset/``, removed at the end; the examples they
  featurised stay there (``<set>-by-<scorer's set>.pkl``) for studies of the selection that need no model.

Each finished piece is kept, so a killed run resumes where it stopped; about 40 min on 2 cores for three sets
(three per-dataset scorers and three pair scorers, 1 epoch each).
"""
from __future__ import annotations

import argparse
import json
import pickle
import shutil
from pathlib import Path

from distill.selector_train import featurise, fit_gap_detector, fit_selector, train_scorer

TARGET = "target"   # the shipped scorer's training target (graded), so LOO and shipped differ only in their data


def latest_version(folder: Path) -> Path | None:
    versions = sorted(folder.glob("v[0-9]*")) if folder.is_dir() else []
    return versions[-1] if versions else None


def scorer_on(pairs: list[dict], out: Path, source: str, models: Path) -> Path:
    """A scorer trained on ``pairs`` under ``out/sentence-scorer``, or the one a previous run left there."""
    from retrieval.answering.registry import SENTENCE_SCORERS

    done = latest_version(out / SENTENCE_SCORERS)
    if done is not None:
        return done
    return train_scorer(pairs, models, source, activate=False, target=TARGET, out=out)


def load_scorer(folder: Path, models: Path):
    from retrieval.answering.answerability import AnswerabilityScorer
    from retrieval.models import STUDENT_START, model_path

    return AnswerabilityScorer.load(folder, model_path(models, STUDENT_START))


def featurised(examples: list[dict], scorer, models: Path, cache: Path) -> list[dict]:
    """``featurise`` with the scorer folder ``scorer()`` gives (trained only when needed), kept in ``cache``."""
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    prepared = featurise(examples, load_scorer(scorer(), models))
    tmp = cache.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(prepared))
    tmp.replace(cache)
    return prepared


def leave_one_out(examples: list[dict], pairs: list[dict], out: Path, models: Path) -> dict:
    """Write ``out/<set>/`` for every dev set in ``examples``; returns {set: {selector, gap_detector} reports}."""
    datasets = sorted({e["dataset"] for e in examples})
    if len(datasets) < 3:
        raise ValueError(f"leave-one-out with crossed features needs three dev sets, got {datasets}")
    pairs_of = {d: [p for p in pairs if p["source"].split(":", 1)[0] == d] for d in datasets}
    scaffold = out / ".by-dataset"

    def single(d: str):
        return lambda: scorer_on(pairs_of[d], scaffold / d, f"{d} only", models)

    reports = {}
    for left_out in datasets:
        target = out / left_out
        if (target / "gap_detector.json").exists() and latest_version(target / "sentence-scorer") is not None:
            reports[left_out] = json.loads((target / "report.json").read_text())
            continue
        others = [d for d in datasets if d != left_out]
        prepared = []
        for d in others:   # featurised by the scorer of the one remaining set: neither its questions nor left_out's
            (crossing,) = [o for o in others if o != d]
            prepared += featurised([e for e in examples if e["dataset"] == d], single(crossing), models,
                                   scaffold / f"{d}-by-{crossing}.pkl")
        selector = fit_selector(prepared)
        detector = fit_gap_detector(prepared, selector)
        scorer = scorer_on([p for d in others for p in pairs_of[d]], target, " + ".join(others), models)
        report = {"left_out": left_out, "trained_on": others, "scorer": scorer.name,
                  "selector": selector.report, "gap_detector": detector.report}
        (target / "selector.json").write_text(json.dumps(selector.to_dict(), indent=1) + "\n")
        (target / "report.json").write_text(json.dumps(report, indent=1) + "\n")
        (target / "gap_detector.json").write_text(json.dumps(detector.to_dict(), indent=1) + "\n")   # last: done
        reports[left_out] = report
    for d in datasets:   # 90 MB each that nothing serves; the featurised examples stay for offline studies
        shutil.rmtree(scaffold / d, ignore_errors=True)
    return reports


def main() -> None:
    from distill.answerability_train import read_pairs

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=Path, required=True)
    parser.add_argument("--pairs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", type=Path, default=Path(".kbqa/models"), help="$KBQA_HOME/models (for MiniLM)")
    args = parser.parse_args()
    examples = [json.loads(line) for line in args.examples.read_text().splitlines() if line.strip()]
    print(json.dumps(leave_one_out(examples, read_pairs(args.pairs), args.out, args.models), indent=1))


if __name__ == "__main__":
    main()
