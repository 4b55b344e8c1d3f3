"""Cross-package imports of the product (ingest, retrieval, distill, serve), read from the source with ``ast``.

    python -m benchs.tools.import_graph [--root DIR]   # prints "importer -> imported: N (file:line, ...)" per edge

The rules it checks (tests/test_import_graph.py runs it, exit status 1 on a violation): imports flow serve, distill
-> retrieval -> ingest; ``distill`` never imports ``serve``; ``serve`` imports ``distill`` only from its entry points
(the CLI and the distillation job wiring), inside functions, so a request never loads training code. Beside the
product: a benchmark script imports no other script (they share benchs/common.py only), and no test imports benchs.
"""
from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ingest", "retrieval", "distill", "serve")
# Which package may import which (besides itself).
ALLOWED = {"ingest": set(), "retrieval": {"ingest"}, "distill": {"retrieval", "ingest"},
           "serve": {"retrieval", "ingest"}}
SERVE_ENTRY_POINTS = ("serve/cli/", "serve/jobs.py")   # may import distill, inside a function
SHARED_BENCH_MODULE = "benchs.common"


def _imported(path: Path):
    """(module name, line, at module level) of every absolute import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            yield name, node.lineno, id(node) in top_level


def imports(root: Path = ROOT) -> list[tuple[str, str, str, int, bool]]:
    """(importer package, imported package, file, line, at module level) for every cross-package import."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for name, line, module_level in _imported(path):
                target = name.split(".")[0]
                if target in PACKAGES and target != package:
                    found.append((package, target, str(path.relative_to(root)), line, module_level))
    return found


def violations(found) -> list[str]:
    bad = []
    for source, target, path, line, module_level in found:
        if target in ALLOWED[source]:
            continue
        if source == "serve" and target == "distill" and path.startswith(SERVE_ENTRY_POINTS) and not module_level:
            continue
        bad.append(f"{path}:{line}: {source} imports {target}")
    return bad


def bench_and_test_violations(root: Path = ROOT) -> list[str]:
    """A benchmark script importing another script, or a test importing benchs."""
    bad = []
    for path in sorted((root / "benchs").rglob("*.py")):
        for name, line, _ in _imported(path):
            if name.startswith("benchs.") and name != SHARED_BENCH_MODULE:
                bad.append(f"{path.relative_to(root)}:{line}: imports {name} (scripts share {SHARED_BENCH_MODULE} only)")
    for path in sorted((root / "tests").rglob("*.py")):
        for name, line, _ in _imported(path):
            if name.split(".")[0] == "benchs":
                bad.append(f"{path.relative_to(root)}:{line}: a test imports {name}")
    return bad


def main() -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=ROOT, help="the repository to read (default: this one)")
    root = parser.parse_args().root
    found = imports(root)
    edges = defaultdict(list)
    for source, target, path, line, _ in found:
        edges[(source, target)].append(f"{path}:{line}")
    for (source, target), places in sorted(edges.items()):
        print(f"{source} -> {target}: {len(places)} ({', '.join(places[:4])}{', ...' if len(places) > 4 else ''})")
    bad = violations(found) + bench_and_test_violations(root)
    for line in bad:
        print("NOT ALLOWED", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
