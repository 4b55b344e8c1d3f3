"""Imports flow one way: serve, distill -> retrieval -> ingest (benchs/tools/import_graph.py)."""
from benchs.import_graph import imports, violations


def test_the_product_keeps_its_import_direction():
    assert violations(imports()) == []


def test_the_checker_catches_a_wrong_way_import(tmp_path):
    for package in ("ingest", "retrieval", "distill", "serve"):
        (tmp_path / package).mkdir()
    (tmp_path / "retrieval" / "bad.py").write_text("from serve.settings import Settings\n")
    (tmp_path / "serve" / "service.py").write_text("def f():\n    from distill.run import distill_collection\n")
    (tmp_path / "serve" / "cli.py").write_text("def f():\n    from distill.run import distill_collection\n")
    assert violations(imports(tmp_path)) == ["retrieval/bad.py:1: retrieval imports serve",
                                             "serve/service.py:2: serve imports distill"]
