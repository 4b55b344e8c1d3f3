"""Which encoder serves a collection: the default one, a shipped one chosen for its documents' languages (the
multilingual encoder, issue 29), or a distilled encoder promoted into the collection."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ingest.language import ENGLISH
from ingest.store import ChunkStore
from retrieval.encoder import TextEncoder
from retrieval.models import MULTILINGUAL

MODEL_META = "encoder_model"   # the shipped model (retrieval/models.py) serving the collection; unset: the default


class EncoderMismatch(RuntimeError):
    """The collection's vectors come from another encoder than the one loaded."""


class CollectionEncoder:
    """The store's ``encoder`` meta names the encoder its vectors come from; ``encoder_dir`` (relative to the
    collection) the folder of a promoted one, loaded with ``loader`` on first need; ``encoder_model`` a shipped model
    other than the default, loaded by name with ``named``."""

    def __init__(self, directory: Path, store: ChunkStore, default: TextEncoder,
                 loader: Callable[[Path], TextEncoder] | None = None,
                 named: Callable[[str], TextEncoder] | None = None):
        self.directory = Path(directory)
        self.store = store
        self.current = default
        self.loader = loader
        self.named = named
        # The shipped model ``current`` is, or was distilled from (the multilingual one), when not the default.
        self.model_name: str | None = None

    @property
    def encoder_dir(self) -> Path | None:
        """Folder of the promoted encoder serving this collection; None while the default serves."""
        stored = self.store.get_meta("encoder_dir")
        return self.directory / stored if stored else None

    def adopt_stored(self) -> TextEncoder:
        """Load the encoder this collection was (re-)embedded with, when it is a promoted one of its own."""
        stored_id, stored_dir = self.store.get_meta("encoder"), self.store.get_meta("encoder_dir")
        stored_model = self.store.get_meta(MODEL_META)
        if stored_dir and stored_id != self.current.encoder_id and self.loader is not None:
            encoder = self.loader(self.directory / stored_dir)
            if encoder.encoder_id != stored_id:
                raise EncoderMismatch(f"{self.directory / stored_dir} is {encoder.encoder_id}, expected {stored_id}")
            self.current, self.model_name = encoder, stored_model   # distilled from that shipped model, if any
        elif (not stored_dir and stored_model and self.named is not None
              and (self.model_name != stored_model or stored_id not in (None, self.current.encoder_id))):
            encoder = self.named(stored_model)
            if stored_id is not None and encoder.encoder_id != stored_id:
                raise EncoderMismatch(f"the prepared {stored_model} is {encoder.encoder_id}, expected {stored_id}: "
                                      f"re-ingest the collection to re-embed it")
            self.current, self.model_name = encoder, stored_model
        return self.current

    def choose(self, name: str) -> None:
        """Serve with the shipped model ``name`` from now on (recorded by the caller's next commit)."""
        if self.named is None:
            raise ValueError("this service loads no shipped encoder by name")
        self.current, self.model_name = self.named(name), name

    def fit_languages(self, languages: set[str]) -> bool:
        """Switch to the multilingual encoder when documents that are not English arrive in a collection served by
        the English default (never a promoted encoder: its owner chose it). True when it switched; the next commit
        re-embeds every chunk and records the choice."""
        if (languages <= {ENGLISH} or self.model_name == MULTILINGUAL or self.named is None
                or self.store.get_meta("encoder_dir")):
            return False
        self.choose(MULTILINGUAL)
        return True

    def check(self, collection: str) -> None:
        stored = self.store.get_meta("encoder")
        if stored is not None and stored != self.current.encoder_id:
            raise EncoderMismatch(
                f"collection {collection!r} was embedded with {stored}, but the loaded encoder is "
                f"{self.current.encoder_id}: run `kbqa ingest PATH --collection {collection}` to re-embed it")

    def stale(self) -> bool:
        """The stored vectors come from another encoder than the current one: re-embed everything."""
        return self.store.get_meta("encoder") not in (None, self.current.encoder_id)
