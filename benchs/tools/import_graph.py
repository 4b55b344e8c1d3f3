"""Cross-package imports of the product (ingest, retrieval, distill, serve), read from the source with ``ast``.

    python -m benchs.tools.import_graph          # prints "importer -> imported: N (file:line, ...)" per edge

The rule it checks (tests/test_import_graph.py runs it): imports flow serve, distill -> retrieval -> ingest;
``distill`` never imports ``serve``; ``serve`` imports ``distill`` only from its entry points (the CLI and the
distillation job wiring), inside functions, so a request never loads training code.
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
SERVE_ENTRY_POINTS = {"serve/cli.py", "serve/jobs.py"}   # may import distill, inside a function


def imports(root: Path = ROOT) -> list[tuple[str, str, str, int, bool]]:
    """(importer package, imported package, file, line, at module level) for every cross-package import."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
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
                    target = name.split(".")[0]
                    if target in PACKAGES and target != package:
                        found.append((package, target, str(path.relative_to(root)), node.lineno,
                                      id(node) in top_level))
    return found


def violations(found) -> list[str]:
    bad = []
    for source, target, path, line, module_level in found:
        if target in ALLOWED[source]:
            continue
        if source == "serve" and target == "distill" and path in SERVE_ENTRY_POINTS and not module_level:
            continue
        bad.append(f"{path}:{line}: {source} imports {target}")
    return bad


def main() -> int:
    found = imports()
    edges = defaultdict(list)
    for source, target, path, line, _ in found:
        edges[(source, target)].append(f"{path}:{line}")
    for (source, target), places in sorted(edges.items()):
        print(f"{source} -> {target}: {len(places)} ({', '.join(places[:4])}{', ...' if len(places) > 4 else ''})")
    bad = violations(found)
    for line in bad:
        print("NOT ALLOWED", line)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
