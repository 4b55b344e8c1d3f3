"""Where kbqa keeps its state: one directory, ``KBQA_HOME``, laid out the same everywhere."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class UnknownCollection(LookupError):
    """Raised when a collection is asked for that was never ingested."""


class InvalidName(ValueError):
    """A collection name the caller chose breaks the naming rule."""


def check_collection_name(name: str) -> str:
    if not isinstance(name, str) or not COLLECTION_NAME.match(name):
        raise InvalidName(
            f"invalid collection name {name!r}: use 1-64 letters, digits, '-' or '_', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class KbqaHome:
    root: Path

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    def collection_dir(self, name: str) -> Path:
        return self.root / "collections" / check_collection_name(name)

    def collections(self) -> list[str]:
        base = self.root / "collections"
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if (p / "store.sqlite").exists())
