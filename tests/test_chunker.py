import pytest

from ingest.chunker import Chunker
from ingest.records import Chunk, Document


def words(text: str) -> int:
    return len(text.split())


def test_headings_become_the_heading_path():
    doc = Document("a.md", "a.md", "Billing", "# Billing\nintro text\n## Refunds\nrefund text\n### Annual\nannual text", markdown=True)
    chunks = Chunker(words, chunk_tokens=50, overlap_tokens=5).split(doc)
    assert [(c.heading, c.text, c.position) for c in chunks] == [
        ("", "intro text", 0), ("Refunds", "refund text", 1), ("Refunds > Annual", "annual text", 2)]
    assert chunks[2].embedding_text() == "Billing > Refunds > Annual\nannual text"


def test_long_sections_respect_the_token_budget_with_overlap():
    text = " ".join(f"w{i}" for i in range(100))
    chunks = Chunker(words, chunk_tokens=30, overlap_tokens=10).split(Document("t", "t", "T", text))
    assert all(words(c.text) <= 30 for c in chunks)
    assert len(chunks) >= 4
    first, second = chunks[0].text.split(), chunks[1].text.split()
    assert set(first) & set(second)  # overlap carries context across the cut
    assert " ".join(c.text for c in chunks).split()[-1] == "w99"


def test_chunk_ids_derive_from_source_and_content():
    a = Chunk("d", "s.md", "T", "H", 0, "same text")
    assert a.chunk_id == Chunk("d", "s.md", "Other title", "H", 5, "same text").chunk_id
    assert a.chunk_id != Chunk("d", "t.md", "T", "H", 0, "same text").chunk_id
    assert a.chunk_id != Chunk("d", "s.md", "T", "H", 0, "other text").chunk_id
    assert a.faiss_id == int(a.chunk_id[:15], 16)


def test_overlap_must_be_smaller_than_chunk():
    with pytest.raises(ValueError, match="overlap_tokens"):
        Chunker(words, chunk_tokens=10, overlap_tokens=10)


def test_faq_question_is_the_question_a_chunk_sits_under():
    from ingest.records import Chunk

    assert Chunk("d", "s", "Help", "FAQ > **Can I pay by card?**", 0, "Yes.").faq_question == "Can I pay by card?"
    assert Chunk("d", "s", "Can I pay by card?", "", 0, "Yes.").faq_question == "Can I pay by card?"
    # the innermost heading decides, not the title, when there is one
    assert Chunk("d", "s", "Why us?", "Pricing", 0, "Nine euros.").faq_question is None
