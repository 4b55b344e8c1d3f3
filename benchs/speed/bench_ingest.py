"""Ingest throughput on kb/docs: a fresh ingest, a no-op re-ingest, and a one-file change.

    python -m benchs.speed.bench_ingest [--path kb/docs] [--models .kbqa/models]
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from benchs.common import publish
from serve.service import KbqaService
from serve.settings import Settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--path", type=Path, default=Path("kb/docs"))
    parser.add_argument("--models", type=Path, default=Path(".kbqa/models"))
    parser.add_argument("--out", type=Path, default=Path("benchs/results/bench_ingest.md"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home, kb = Path(tmp) / "home", Path(tmp) / "kb"
        home.mkdir()
        (home / "models").symlink_to(args.models.resolve())
        shutil.copytree(args.path, kb)
        service = KbqaService.load(Settings(home=home), with_generator=False)
        rows = []
        start = time.perf_counter()
        fresh = service.ingest(kb)
        rows.append(("fresh ingest", fresh, time.perf_counter() - start))
        start = time.perf_counter()
        again = service.ingest(kb)
        rows.append(("re-ingest, nothing changed", again, time.perf_counter() - start))
        target = sorted(kb.rglob("*.md"))[0]
        target.write_text(target.read_text() + "\n\n## Added section\n\nA new paragraph about refunds.\n")
        start = time.perf_counter()
        changed = service.ingest(kb)
        rows.append(("re-ingest, one file changed", changed, time.perf_counter() - start))
        # Correctness first: the counts must add up before any speed is printed.
        assert not fresh.errors and len(fresh.added) == len(list(kb.rglob("*.md")))
        assert again.chunks_embedded == 0 and len(again.unchanged) == len(fresh.added)
        assert changed.changed == [target.relative_to(kb).as_posix()] and changed.chunks_embedded >= 1
        lines = [f"encoder {service.encoder.encoder_id}, {os.cpu_count()} CPUs", "",
                 "| run | files | chunks embedded | chunks total | seconds | chunks embedded/s |",
                 "|---|---|---|---|---|---|"]
        for label, report, seconds in rows:
            files = len(report.added) + len(report.changed) + len(report.unchanged)
            rate = f"{report.chunks_embedded / seconds:.1f}" if report.chunks_embedded else "-"
            lines.append(f"| {label} | {files} | {report.chunks_embedded} | {report.chunks_total} | {seconds:.2f} | "
                         f"{rate} |")
        publish(lines, args.out)


if __name__ == "__main__":
    main()
