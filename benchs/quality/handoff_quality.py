"""Hand-off classifier (retrieval/answering/handoff.py:customer_signal) on its labelled set's held-out half.

    python -m benchs.quality.handoff_quality [--split report]

Positive = the message asks for a person or shows frustration. The lexicon was read against the tune half only;
the report half is what this prints (precision, recall, per label, and every error, so a team can extend it).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchs.common import REPO, publish
from retrieval.answering.handoff import customer_signal

MESSAGES = REPO / "benchs" / "data" / "handoff" / "messages.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", default="report", choices=("tune", "report"))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows = [r for r in map(json.loads, MESSAGES.read_text().splitlines()) if r["split"] == args.split]
    counts = {"tp": 0, "fp": 0, "fn": 0, "tn": 0}
    by_label: dict[str, list[int]] = {}
    errors = []
    for row in rows:
        predicted, gold = customer_signal(row["text"]), row["label"] != "none"
        key = ("t" if (predicted is not None) == gold else "f") + ("p" if predicted is not None else "n")
        counts[key] += 1
        by_label.setdefault(f"{row['label']} ({row['source'] if row['label'] == 'none' else 'written'})", []).append(
            int((predicted is not None) == gold))
        if (predicted is not None) != gold:
            errors.append(f"- {'false positive' if predicted else 'missed'} ({row['label']}): {row['text'][:120]!r}")
    precision = counts["tp"] / max(1, counts["tp"] + counts["fp"])
    recall = counts["tp"] / max(1, counts["tp"] + counts["fn"])
    lines = [f"Hand-off classifier (lexicon), {args.split} split: {len(rows)} messages, "
             f"{counts['tp'] + counts['fn']} positive (asks for a person or frustration).", "",
             "| precision | recall | F1 | true pos | false pos | missed | true neg |", "|---|---|---|---|---|---|---|",
             f"| {precision:.3f} | {recall:.3f} | {2 * precision * recall / max(1e-9, precision + recall):.3f} | "
             f"{counts['tp']} | {counts['fp']} | {counts['fn']} | {counts['tn']} |", "",
             "| label (source) | messages | correct |", "|---|---|---|"]
    lines += [f"| {label} | {len(v)} | {sum(v) / len(v):.3f} |" for label, v in sorted(by_label.items())]
    lines += ["", "Errors:", ""] + (errors or ["- none"])
    publish(lines, args.out or Path(f"benchs/results/handoff_quality_{args.split}.md"))


if __name__ == "__main__":
    main()
