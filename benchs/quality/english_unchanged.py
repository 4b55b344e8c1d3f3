"""English collections rank exactly as before the multilingual work (issue 29): every dev-set question searched in
every mode on fresh collections built by an earlier commit and by this tree, in one run, on one CPU.

    python -m benchs.quality.english_unchanged --data PATH/TO/shared/data --base 94d24aa

The earlier commit is checked out into a temporary git worktree; each tree ingests the dev sets into its own fresh
home (the prepared models linked from .kbqa-bench) and writes, per question and mode, the ranked chunk ids and
scores. Identical means the same ids in the same order and scores equal to 6 decimals.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchs.common import BENCH_HOME, REPO, publish

DATASETS = ("emanualqa", "covid_faq_deepset", "techqa_dev", "plausible_docs")
MODES = ("hybrid", "dense", "bm25")
# Run inside each tree: only the APIs both trees have (benchs.common's dev-set readers, KbqaService, ingest, search).
DUMP = r"""
import json, os, sys
from pathlib import Path
from benchs.common import dataset_files, load_questions
from serve.service import KbqaService
from serve.settings import Settings
data, home, out, names, modes = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4].split(","), sys.argv[5].split(",")
service = KbqaService.load(Settings(home=home), with_generator=False)
result = {}
for name in names:
    kb, questions_path = dataset_files(data, name)
    staged = home / "sources" / name
    staged.mkdir(parents=True, exist_ok=True)
    (staged / "kb.jsonl").write_bytes(kb.read_bytes())
    service.ingest(staged, collection=name.replace("_", "-"))
    collection = service.collection(name.replace("_", "-"))
    questions = load_questions(questions_path)
    result[name] = {f"{q['id']}|{mode}": [[h.chunk.chunk_id, round(h.score, 6)] for h in collection.search(q["question"], 10, mode)]
                    for q in questions for mode in modes}
out.write_text(json.dumps(result))
"""


def dump(tree: Path, data: Path, out: Path, datasets: list[str]) -> dict:
    home = Path(tempfile.mkdtemp(prefix="kbqa-unchanged-"))
    (home / "models").symlink_to((BENCH_HOME / "models").resolve())
    env = {**os.environ, "PYTHONPATH": str(tree), "KBQA_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-c", DUMP, str(data.resolve()), str(home), str(out), ",".join(datasets),
                    ",".join(MODES)], cwd=tree, env=env, check=True)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--base", required=True, help="the commit to compare with")
    parser.add_argument("--datasets", nargs="*", default=list(DATASETS))
    parser.add_argument("--out", type=Path, default=REPO / "benchs" / "results" / "english_unchanged.md")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kbqa-base-"))
    subprocess.run(["git", "worktree", "add", "--detach", str(work / "tree"), args.base], cwd=REPO, check=True)
    try:
        before = dump(work / "tree", args.data, work / "before.json", args.datasets)
        after = dump(REPO, args.data, work / "after.json", args.datasets)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(work / "tree")], cwd=REPO, check=True)
    lines = [f"Base commit {args.base} against this tree, fresh collections each.", "",
             "| dataset | mode | questions | identical rankings and scores | differing |", "|---|---|---|---|---|"]
    for name in args.datasets:
        for mode in MODES:
            keys = [k for k in before[name] if k.endswith("|" + mode)]
            same = sum(before[name][k] == after[name].get(k) for k in keys)
            lines.append(f"| {name} | {mode} | {len(keys)} | {same} | {len(keys) - same} |")
    publish(lines, args.out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
