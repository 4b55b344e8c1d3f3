"""What every subcommand shares: the service they run against, and how a training command reports."""
from __future__ import annotations

import json


def service(with_generator: bool):
    from serve.service import KbqaService
    from serve.settings import Settings

    return KbqaService.load(Settings(), with_generator=with_generator)


def print_training(report: dict, as_json: bool, summary: str, measure: str, setting: str) -> int:
    """What a training command prints: the report as JSON, or one line saying how to serve what it made."""
    if as_json:
        print(json.dumps(report, indent=1))
    else:
        print(f"{summary}; " + ("now current: restart `kbqa serve` to load it" if report["activated"] else
                                f"not activated: measure it ({measure} ...), then serve it with "
                                f"{setting}=<its folder> or train again with --activate"))
    return 0
