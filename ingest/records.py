"""The record types that flow between stages."""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

_MARKUP = re.compile(r"[*_`#>|]+")
MAX_ID_CHARS = 500   # a document id, on every path: uploaded files, records, CLI folders


def strip_markup(text: str) -> str:
    """Markdown emphasis, code and heading marks out, whitespace collapsed."""
    return " ".join(_MARKUP.sub(" ", text).split())


def content_hash(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode("utf-8"))
        digest.update(b"\x00")  # keeps ("ab", "c") apart from ("a", "bc")
    return digest.hexdigest()


@dataclass
class Document:
    """One logical document: a file, or one record of a JSON/JSONL/CSV file."""

    doc_id: str
    source: str               # path relative to the ingested root, or the record id
    title: str
    text: str
    metadata: dict = field(default_factory=dict)
    markdown: bool = False    # text keeps Markdown headings, so chunking can follow them


@dataclass
class Chunk:
    """A passage small enough for the encoder; its id derives from its source and content."""

    doc_id: str
    source: str
    title: str
    heading: str              # heading path inside the document, "A > B"; "" when none
    position: int             # order of the chunk inside its document
    text: str
    chunk_id: str = ""

    def __post_init__(self) -> None:
        if not self.chunk_id:
            self.chunk_id = content_hash(self.source, self.heading, self.text)[:16]

    @property
    def faiss_id(self) -> int:
        # FAISS wants int64 ids: 60 bits of the content id keep collisions negligible.
        return int(self.chunk_id[:15], 16)

    @property
    def context(self) -> str:
        """Title and heading path, "Title > A > B": where the passage sits, shown with it everywhere."""
        return " > ".join(part for part in (self.title, self.heading) if part)

    @property
    def faq_question(self) -> str | None:
        """The question this chunk answers when it sits under one (an FAQ): its innermost heading, or its
        document's title when it has no heading, ending in "?"; None otherwise."""
        label = strip_markup(self.heading.split(" > ")[-1] if self.heading else self.title)
        return label if label.endswith("?") else None

    def embedding_text(self) -> str:
        """What the encoders and BM25 see: the title and heading path give a passage its context."""
        return f"{self.context}\n{self.text}" if self.context else self.text
