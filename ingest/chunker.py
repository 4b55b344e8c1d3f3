"""Heading-aware chunking within the encoder's token budget, with overlap."""
from __future__ import annotations

from functools import lru_cache
from typing import Callable

from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter

from ingest.records import Chunk, Document

# MiniLM reads 256 word pieces; 200 for the body leaves room for the title and heading path
# that Chunk.embedding_text() puts in front.
DEFAULT_CHUNK_TOKENS = 200
DEFAULT_OVERLAP_TOKENS = 40
_SHORT_SPLIT = 48        # characters: words and single characters, the splits the splitter measures most
_CACHED_SPLITS = 200_000
_HEADINGS = [("#", "h1"), ("##", "h2"), ("###", "h3"), ("####", "h4")]


class Chunker:
    """Splits Documents into Chunks; ``count_tokens`` is the encoder tokenizer's length function."""

    def __init__(self, count_tokens: Callable[[str], int], chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
                 overlap_tokens: int = DEFAULT_OVERLAP_TOKENS):
        if not 0 <= overlap_tokens < chunk_tokens:
            raise ValueError(f"need 0 <= overlap_tokens ({overlap_tokens}) < chunk_tokens ({chunk_tokens})")
        self.headings = MarkdownHeaderTextSplitter(_HEADINGS, strip_headers=True)
        # The splitter measures every split it makes: each word, and each character of a run without spaces (a
        # 1M-character token took 80 s at ~80 us a tokenizer call). Short splits repeat, so their counts are cached.
        short = lru_cache(maxsize=_CACHED_SPLITS)(count_tokens)
        self.count_tokens = lambda text: short(text) if len(text) <= _SHORT_SPLIT else count_tokens(text)
        self.splitter = RecursiveCharacterTextSplitter(
            chunk_size=chunk_tokens, chunk_overlap=overlap_tokens, length_function=self.count_tokens,
            separators=["\n\n", "\n", ". ", " ", ""], keep_separator="end",
        )

    @classmethod
    def for_tokenizer(cls, tokenizer_dir: str, **kwargs) -> "Chunker":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        return cls(lambda text: len(tokenizer.encode(text, add_special_tokens=False)), **kwargs)

    def _sections(self, doc: Document) -> list[tuple[str, str]]:
        if not doc.markdown:
            return [("", doc.text)]
        sections = []
        for part in self.headings.split_text(doc.text):
            path = [part.metadata[key] for _, key in _HEADINGS if key in part.metadata]
            # An H1 that repeats the title adds nothing to the heading path.
            if path and path[0] == doc.title:
                path = path[1:]
            sections.append((" > ".join(path), part.page_content))
        return sections

    def split(self, doc: Document) -> list[Chunk]:
        chunks: list[Chunk] = []
        for heading, body in self._sections(doc):
            for piece in self.splitter.split_text(body):
                piece = piece.strip()
                if piece:
                    chunks.append(Chunk(doc_id=doc.doc_id, source=doc.source, title=doc.title,
                                        heading=heading, position=len(chunks), text=piece))
        return chunks
