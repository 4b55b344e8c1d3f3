"""Imports flow one way: serve, distill -> retrieval -> ingest; benchmark scripts share only benchs/common.py; tests
import no benchmark. The checker is the repo's own command (benchs/tools/import_graph.py), run as a user runs it."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchs.tools.import_graph", "--root", str(root)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_the_product_keeps_its_import_direction():
    result = _check(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "NOT ALLOWED" not in result.stdout and "serve -> retrieval" in result.stdout


def test_the_checker_catches_wrong_way_imports(tmp_path):
    for folder in ("ingest", "retrieval", "distill", "serve", "serve/cli", "benchs/quality", "tests"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    (tmp_path / "retrieval" / "bad.py").write_text("from serve.settings import Settings\n")
    (tmp_path / "serve" / "service.py").write_text("def f():\n    from distill.run import distill_collection\n")
    (tmp_path / "serve" / "cli" / "training.py").write_text("def f():\n    from distill.run import distill_collection\n")
    (tmp_path / "benchs" / "quality" / "a.py").write_text("from benchs.common import publish\nfrom benchs.quality.b import x\n")
    (tmp_path / "tests" / "test_x.py").write_text("from benchs.common import publish\n")
    result = _check(tmp_path)
    assert result.returncode == 1
    wrong = sorted(line.removeprefix("NOT ALLOWED ") for line in result.stdout.splitlines()
                   if line.startswith("NOT ALLOWED"))
    assert wrong == ["benchs/quality/a.py:2: imports benchs.quality.b (scripts share benchs.common only)",
                     "retrieval/bad.py:1: retrieval imports serve", "serve/service.py:2: serve imports distill",
                     "tests/test_x.py:1: a test imports benchs.common"]
