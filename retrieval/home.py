"""Where kbqa keeps its state: one directory, ``KBQA_HOME``, laid out the same everywhere."""
from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
CREATED_META = "created"   # a store meta key: the collection was created on purpose, empty or not


def _listed(store: Path) -> bool:
    """A collection exists once something was committed to it, or it was created empty on purpose: an ingest killed
    before its first commit leaves a store that is not listed (and is reused by the next ingest of that name)."""
    try:
        with closing(sqlite3.connect(f"{store.resolve().as_uri()}?mode=ro", uri=True)) as db:
            found = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('generation', ?)", (CREATED_META,)))
    except sqlite3.OperationalError as exc:
        return "no such table" not in str(exc)   # killed before the schema: nothing there; anything else: shown
    except sqlite3.DatabaseError:
        return True   # a damaged store stays listed, so its errors are seen rather than the collection vanishing
    return CREATED_META in found or int(found.get("generation", "0")) > 0


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
        return sorted(p.name for p in base.iterdir()
                      if (p / "store.sqlite").exists() and _listed(p / "store.sqlite"))
