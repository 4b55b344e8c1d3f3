"""Which encoder serves a collection: the default one, or a distilled encoder promoted into the collection."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ingest.store import ChunkStore
from retrieval.encoder import TextEncoder


class EncoderMismatch(RuntimeError):
    """The collection's vectors come from another encoder than the one loaded."""


class CollectionEncoder:
    """The store's ``encoder`` meta names the encoder its vectors come from; ``encoder_dir`` (relative to the
    collection) the folder of a promoted one, loaded with ``loader`` on first need."""

    def __init__(self, directory: Path, store: ChunkStore, default: TextEncoder,
                 loader: Callable[[Path], TextEncoder] | None = None):
        self.directory = Path(directory)
        self.store = store
        self.current = default
        self.loader = loader

    @property
    def encoder_dir(self) -> Path | None:
        """Folder of the promoted encoder serving this collection; None while the default serves."""
        stored = self.store.get_meta("encoder_dir")
        return self.directory / stored if stored else None

    def adopt_stored(self) -> TextEncoder:
        """Load the encoder this collection was (re-)embedded with, when it is a promoted one of its own."""
        stored_id, stored_dir = self.store.get_meta("encoder"), self.store.get_meta("encoder_dir")
        if stored_dir and stored_id != self.current.encoder_id and self.loader is not None:
            encoder = self.loader(self.directory / stored_dir)
            if encoder.encoder_id != stored_id:
                raise EncoderMismatch(f"{self.directory / stored_dir} is {encoder.encoder_id}, expected {stored_id}")
            self.current = encoder
        return self.current

    def check(self, collection: str) -> None:
        stored = self.store.get_meta("encoder")
        if stored is not None and stored != self.current.encoder_id:
            raise EncoderMismatch(
                f"collection {collection!r} was embedded with {stored}, but the loaded encoder is "
                f"{self.current.encoder_id}: run `kbqa ingest PATH --collection {collection}` to re-embed it")

    def stale(self) -> bool:
        """The stored vectors come from another encoder than the current one: re-embed everything."""
        return self.store.get_meta("encoder") not in (None, self.current.encoder_id)
