"""The `kbqa` command. Each module registers one group of subcommands and keeps only argument handling and
printing; the work lives in the service, distill/ and retrieval/."""
from __future__ import annotations

import argparse
import logging
import os
import sys

# Weights come only from the prepared folders: never let a library reach for a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from serve.cli import collections, keys, models, quality, server, training  # noqa: E402

GROUPS = (models, collections, training, quality, keys, server)   # the order `kbqa --help` lists them in


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kbqa", description="Grounded question answering over a knowledge base. "
                                     "State lives in $KBQA_HOME (default ./.kbqa).")
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from retrieval.home import UnknownCollection
    from retrieval.model_store import ModelNotReady

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if getattr(args, "k", 1) < 1:
        print("kbqa: --k must be at least 1", file=sys.stderr)
        return 2
    try:
        return args.func(args)
    except (UnknownCollection, ModelNotReady, FileNotFoundError, ValueError) as exc:
        print(f"kbqa: {exc}", file=sys.stderr)
        return 2
