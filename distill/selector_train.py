"""Fit the answer-sentence selector and the knowledge-gap detector (retrieval/answering/selection.py, gap_detector.py).

    python -m distill.selector_train --examples distill/data/selector_examples.jsonl --scorer FOLDER
    python -m distill.selector_train --examples ... --train-scorer distill/data/sentence_pairs.jsonl   # scorer too
    python -m distill.selector_train --crossed .kbqa-bench/loo/.by-dataset --gap-out /dev/null   # the shipped selector

``--train-scorer PAIRS`` first fine-tunes the sentence scorer (MiniLM cross-encoder, the answerability trainer on
(question, sentence) pairs, 1 epoch) into ``$KBQA_HOME/models/sentence-scorer/vNNNN`` and makes it current; the
shipped one is that folder copied to retrieval/answering/shipped-sentence-scorer. It is cross-fitted: two more
scorers, each trained on the pairs of one half of the questions, score the examples of the other half, so the
selector and the gap detector learn from scores on questions their scorer never saw (as serving will meet them).
The three trainings take about 30 min on 2 cores.

``--crossed DIR`` fits on the examples distill/selector_loo.py featurised crossed by dataset (``<set>-by-<other>.pkl``):
every example scored by a scorer that never saw its domain, as a new customer's questions are. The shipped selector is
fitted so (issue 27): a selector fitted on in-domain scores learns to trust the scorer more than a new domain allows.

Examples are built from the dev sets' tune halves by ``benchs/builders/build_selector_data.py``; each is ``{"question",
"reference", "dataset", "kind", "passages": [{"context", "text", "dense"}]}`` with the prompt passages as serving
would pick them. ``kind`` is ``answerable`` (the reference answer is in the collection), or ``gap`` (its gold
documents were removed, or TechQA marks it unanswerable).

- Selector: labels are the extractive oracle's choice (distill/metrics.py) on answerable examples. A logistic model is
  fitted on the unit features; then the answer's shape (scattered units or one passage's section) and its threshold,
  word budget and lead that maximise mean token-F1 (datasets weighted equally, so a large set does not decide alone).
- Gap detector: a logistic model on ``gap_signals``, gap = 1; its threshold is the lowest that refuses at most
  ``max_false_abstention`` of the answerable examples of every dataset.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np

from distill.metrics import oracle_selection, token_f1
from retrieval.answering.gap_detector import SHIPPED_GAP_DETECTOR, SIGNALS, GapDetector, gap_signals
from retrieval.answering.selection import SHIPPED_SELECTOR, Selection, SentenceSelector, scored_units

THRESHOLDS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6)
BUDGETS = (30, 45, 60, 80, 100, 130, 160, 200)
SECTION_BUDGETS = (60, 80, 110, 140, 180)
LEAD_UNITS = (0, 1, 2, 3, 4, 6, 10)
MAX_FALSE_ABSTENTION = 0.08   # on tune, per dataset: leaves room under the 10% target on unseen questions


def passages_of(example: dict) -> list[tuple[str, str, float]]:
    return [(p.get("context", ""), p["text"], float(p.get("dense") or 0.0)) for p in example["passages"]]


def featurise(examples: list[dict], scorer) -> list[dict]:
    """Per example with passages: its units, the scorer's probabilities, the features and (answerable) oracle labels."""
    prepared = []
    for example in examples:
        units, scores, features = scored_units(example["question"], passages_of(example), scorer)
        if not units:
            continue
        labels = np.zeros(len(units))
        if example.get("reference"):
            labels[oracle_selection([u.text for u in units], example["reference"])] = 1.0
        prepared.append({"example": example, "units": units, "scores": scores, "labels": labels,
                         "features": features})
    return prepared


def selection_of(selector: SentenceSelector, item: dict) -> Selection:
    probs = selector.probabilities(item["features"])
    return Selection(selector.choose(item["units"], probs), [float(p) for p in probs], item["units"],
                     [float(s) for s in item["scores"]])


def mean_by_dataset(values: list[float], datasets: list[str]) -> float:
    groups = defaultdict(list)
    for value, name in zip(values, datasets):
        groups[name].append(value)
    return float(np.mean([np.mean(v) for v in groups.values()]))


def fit_selector(prepared: list[dict], c: float = 1.0) -> SentenceSelector:
    from sklearn.linear_model import LogisticRegression

    answerable = [p for p in prepared if p["example"]["kind"] == "answerable"]
    x = np.concatenate([p["features"] for p in answerable])
    y = np.concatenate([p["labels"] for p in answerable])
    # The bias is feature 0 (a column of ones): sklearn's own intercept stays off so the weights are the model.
    weights = LogisticRegression(C=c, fit_intercept=False, max_iter=5000).fit(x, y).coef_[0].tolist()
    datasets = [p["example"]["dataset"] for p in answerable]
    candidates = [dict(threshold=t, budget_words=b) for t in THRESHOLDS for b in BUDGETS]
    candidates += [dict(shape="section", budget_words=b, lead_units=n) for b in SECTION_BUDGETS for n in LEAD_UNITS]
    best = None
    for shape in candidates:
        selector = SentenceSelector(weights, **shape)
        f1 = [token_f1(selection_of(selector, p).text()[0], p["example"]["reference"]) for p in answerable]
        score = mean_by_dataset(f1, datasets)
        if best is None or score > best[0]:
            best = (score, shape)
    score, shape = best
    report = {"examples": len(answerable), "units": int(len(y)), "positives": int(y.sum()),
              "tune_token_f1": round(score, 4)}
    return SentenceSelector(weights, **shape, report=report)


def fit_gap_detector(prepared: list[dict], selector: SentenceSelector, c: float = 1.0,
                     max_false_abstention: float = MAX_FALSE_ABSTENTION, using: tuple[str, ...] = SIGNALS) -> GapDetector:
    """``using``: the signals fitted on (the others weigh 0; benchs/quality/loo_fit_study.py compares subsets)."""
    from sklearn.linear_model import LogisticRegression

    signals = np.stack([gap_signals(p["example"]["question"], passages_of(p["example"]), selection_of(selector, p))
                        for p in prepared])
    gap = np.array([p["example"]["kind"] == "gap" for p in prepared], dtype=float)
    columns = [SIGNALS.index(name) for name in using]
    weights = np.zeros(len(SIGNALS))
    weights[columns] = LogisticRegression(C=c, fit_intercept=False, max_iter=5000).fit(signals[:, columns], gap).coef_[0]
    weights = weights.tolist()
    detector = GapDetector(weights, 1.0)
    probs = np.array([detector.probability(s) for s in signals])
    datasets = np.array([p["example"]["dataset"] for p in prepared])
    # Lowest threshold whose false abstentions stay within the limit on every dataset's answerable examples.
    threshold = 1.0
    for candidate in sorted(set(probs.tolist()), reverse=True):
        if all((probs[(datasets == d) & (gap == 0)] >= candidate).mean() <= max_false_abstention
               for d in set(datasets)):
            threshold = float(candidate)
        else:
            break
    refused = probs >= threshold
    report = {"examples": len(prepared), "gap_examples": int(gap.sum()),
              "tune_gap_recall": round(float(refused[gap == 1].mean()), 4) if gap.any() else None,
              "tune_false_abstention": round(float(refused[gap == 0].mean()), 4),
              "max_false_abstention": max_false_abstention}
    return GapDetector(weights, threshold, report)


def fold_of(key: str, folds: int = 2) -> int:
    """Stable fold of a question (``dataset:id``); a pair's ``source`` and an example share it."""
    return int(hashlib.sha1(key.encode()).hexdigest(), 16) % folds


def example_key(example: dict) -> str:
    return f"{example['dataset']}:{example['id'].removesuffix(':gap')}"


def train_scorer(pairs: list[dict], models: Path, source: str, activate: bool, target: str = "label",
                 epochs: int = 1, out: Path | None = None) -> Path:
    """A scorer trained on ``pairs`` from MiniLM (in ``models``), published under ``out`` (default ``models``)."""
    from distill.answerability_train import AnswerabilityTrainConfig, train_answerability
    from retrieval.answering.registry import SENTENCE_SCORERS
    from retrieval.models import STUDENT_START, model_path

    config = AnswerabilityTrainConfig(epochs=epochs, batch_size=32, max_length=128, lr=5e-5, validation_share=0.15,
                                      target=target)
    out = models if out is None else out
    report = train_answerability(model_path(models, STUDENT_START), pairs, out, config, show_progress=True,
                                 source=source, activate=activate, registry=SENTENCE_SCORERS,
                                 command="python -m distill.selector_train --train-scorer")
    print(f"sentence scorer {report['version']} ({source}): validation AUC {report['valid_auc']}")
    return out / SENTENCE_SCORERS / report["version"]


def cross_fitted(examples: list[dict], pairs: list[dict], models: Path, source: str, **training) -> list[dict]:
    """Featurise each half of the examples with a scorer trained on the other half's questions only."""
    from retrieval.answering.answerability import AnswerabilityScorer
    from retrieval.models import STUDENT_START, model_path

    prepared = []
    for fold in (0, 1):
        held_out = [e for e in examples if fold_of(example_key(e)) == fold]
        folder = train_scorer([p for p in pairs if fold_of(p["source"]) != fold], models,
                              f"{source} without fold {fold}", activate=False, **training)
        prepared += featurise(held_out, AnswerabilityScorer.load(folder, model_path(models, STUDENT_START)))
        shutil.rmtree(folder)   # a fold scorer is scaffolding: 90 MB that nothing serves
    return prepared


def main() -> None:
    from retrieval.answering.answerability import AnswerabilityScorer
    from retrieval.models import STUDENT_START, model_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=Path)
    scorer_source = parser.add_mutually_exclusive_group(required=True)
    scorer_source.add_argument("--crossed", type=Path, metavar="DIR",
                               help="fit on selector_loo's dataset-crossed features instead of scoring --examples")
    scorer_source.add_argument("--scorer", type=Path, help="the sentence scorer folder")
    scorer_source.add_argument("--train-scorer", type=Path, metavar="PAIRS", help="train one on these pairs first")
    parser.add_argument("--target", default="label", choices=("label", "target"),
                        help="train the scorer on the oracle's 0/1 label or the graded target (build_sentence_pairs.py)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--cross-fit-only", action="store_true",
                        help="compare training choices: the two fold scorers and the fits only, no final scorer")
    parser.add_argument("--models", type=Path, default=Path(".kbqa/models"), help="$KBQA_HOME/models (for MiniLM)")
    parser.add_argument("--selector-out", type=Path, default=SHIPPED_SELECTOR)
    parser.add_argument("--gap-out", type=Path, default=SHIPPED_GAP_DETECTOR)
    args = parser.parse_args()
    if args.crossed is None and args.examples is None:
        parser.error("--examples is needed unless --crossed is given")
    examples = [] if args.crossed else [json.loads(line) for line in args.examples.read_text().splitlines() if line.strip()]
    if args.crossed is not None:
        import pickle

        prepared = [p for path in sorted(args.crossed.glob("*-by-*.pkl")) for p in pickle.loads(path.read_bytes())]
        if not prepared:
            parser.error(f"no crossed features (*-by-*.pkl) in {args.crossed}: run python -m distill.selector_loo")
    elif args.train_scorer is not None:
        from distill.answerability_train import read_pairs

        pairs = read_pairs(args.train_scorer)
        training = {"target": args.target, "epochs": args.epochs}
        prepared = cross_fitted(examples, pairs, args.models, args.train_scorer.name, **training)
        if not args.cross_fit_only:
            train_scorer(pairs, args.models, args.train_scorer.name, activate=True, **training)
    else:
        prepared = featurise(examples, AnswerabilityScorer.load(args.scorer, model_path(args.models, STUDENT_START)))
    selector = fit_selector(prepared)
    detector = fit_gap_detector(prepared, selector)
    args.selector_out.write_text(json.dumps(selector.to_dict(), indent=1) + "\n")
    args.gap_out.write_text(json.dumps(detector.to_dict(), indent=1) + "\n")
    print(json.dumps({"selector": selector.to_dict(), "gap_detector": detector.to_dict()}, indent=1))


if __name__ == "__main__":
    main()
