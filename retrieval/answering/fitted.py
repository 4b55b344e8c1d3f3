"""What the fitted answer models (selection.py's selector, gap_detector.py's detector) share: the logit of a
probability, and reading their JSON files with an error that names the fix."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, TypeVar

T = TypeVar("T")


def logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return math.log(p / (1 - p))


def read_fitted(path: Path, names_key: str, names: tuple[str, ...], what: str, build: Callable[[dict], T]) -> T:
    """``build(spec)`` of the JSON spec in ``path``, whose ``names_key`` list must be this code's ``names`` (else
    the weights mean nothing). Any fault names the file and the command that rewrites it."""
    try:
        spec = json.loads(Path(path).read_text())
        if spec.get(names_key) != list(names):
            raise ValueError(f"its {names_key} {spec.get(names_key)} are not this code's {list(names)}")
        return build(spec)
    except (OSError, ValueError, AttributeError, KeyError, TypeError) as exc:
        raise ValueError(f"{what} file {path} is unusable ({exc}); retrain it with "
                         f"`python -m distill.selector_train`") from exc
