import json
from pathlib import Path

import pytest

from ingest.loaders import LoadError, clean_mdx, load_file

# A one-page PDF whose text layer says "Refunds take five days" (written by hand; offsets are computed below).
def _tiny_pdf(text: str) -> bytes:
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return out


def write(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def test_markdown_keeps_front_matter_and_cleans_mdx(tmp_path):
    md = """---
title: Cancel your plan
description: How to stop paying
---
import Thing from '@site/thing';

## Steps

:::note Before you go
Export your data first.
:::

<div class="browser"><img src={useBaseUrl('img/x.png')} /></div>
Click **Cancel** in [account settings](https://example.com/settings).

```js
const x = {a: 1};
```
"""
    [doc] = load_file(write(tmp_path, "guide/cancel.mdx", md), "guide/cancel.mdx")
    assert doc.doc_id == "guide/cancel.mdx" and doc.title == "Cancel your plan"
    assert doc.metadata["description"] == "How to stop paying"
    assert "import" not in doc.text and "<div" not in doc.text and ":::" not in doc.text and "useBaseUrl" not in doc.text
    assert "Note: Before you go:" in doc.text
    assert "account settings" in doc.text and "https://example.com" not in doc.text
    assert "const x = {a: 1};" in doc.text  # code blocks stay untouched
    assert doc.markdown


def test_clean_mdx_drops_comments():
    assert clean_mdx("a <!-- hidden --> b {/* also */} c") == "a  b  c"


def test_html_takes_main_text_not_navigation(tmp_path):
    html = """<html><head><title>Refunds</title><script>var x=1;</script></head><body>
    <nav><a href="/">Home</a> <a href="/pricing">Pricing menu</a></nav>
    <main><h1>Refunds</h1><p>Refunds take <b>five</b> days.</p><h2>Exceptions</h2><p>Annual plans differ.</p></main>
    <footer>Copyright footer</footer></body></html>"""
    [doc] = load_file(write(tmp_path, "refunds.html", html), "refunds.html")
    assert doc.title == "Refunds"
    assert "Refunds take five days." in doc.text
    assert "## Exceptions" in doc.text
    assert "Pricing menu" not in doc.text and "footer" not in doc.text and "var x" not in doc.text


def test_csv_faq_rows_become_documents(tmp_path):
    path = write(tmp_path, "faq.csv", "Question,Answer\nHow do I pay?,By card.\n,skipped\nCan I get a refund?,Yes within 30 days.\n")
    docs = load_file(path, "faq.csv")
    assert [d.doc_id for d in docs] == ["faq.csv#1", "faq.csv#3"]
    assert docs[1].title == "Can I get a refund?" and docs[1].text == "Can I get a refund?\nYes within 30 days."


def test_csv_without_question_answer_columns_is_refused(tmp_path):
    with pytest.raises(LoadError, match="'question' and 'answer'"):
        load_file(write(tmp_path, "x.csv", "a,b\n1,2\n"), "x.csv")


def test_jsonl_record_id_becomes_document_id(tmp_path):
    lines = [{"id": "kb-1", "title": "One", "text": "first"}, {"id": "kb-2", "title": "Two", "text": "second"}]
    docs = load_file(write(tmp_path, "kb.jsonl", "\n".join(json.dumps(x) for x in lines)), "kb.jsonl")
    assert [(d.doc_id, d.source, d.title, d.text) for d in docs] == [("kb-1", "kb-1", "One", "first"), ("kb-2", "kb-2", "Two", "second")]


def test_json_list_and_bad_records(tmp_path):
    docs = load_file(write(tmp_path, "kb.json", json.dumps([{"id": 7, "text": "seven"}])), "kb.json")
    assert docs[0].doc_id == "7" and docs[0].title == "7"
    with pytest.raises(LoadError, match="line 2 is not valid JSON"):
        load_file(write(tmp_path, "bad.jsonl", '{"id": "a", "text": "x"}\n{oops'), "bad.jsonl")
    with pytest.raises(LoadError, match="needs a non-empty 'id'"):
        load_file(write(tmp_path, "noid.jsonl", '{"text": "x"}'), "noid.jsonl")
    with pytest.raises(LoadError, match="duplicate record ids"):
        load_file(write(tmp_path, "dup.jsonl", '{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}'), "dup.jsonl")


def test_pdf_text_layer(tmp_path):
    [doc] = load_file(write(tmp_path, "policy.pdf", _tiny_pdf("Refunds take five days")), "policy.pdf")
    assert "Refunds take five days" in doc.text and doc.metadata["pages"] == "1"


@pytest.mark.parametrize("name,content,reason", [
    ("broken.pdf", b"%PDF-1.4\nthis is not really a pdf", "not a readable PDF"),
    ("blob.txt", b"\x00\x01\x02binary", "looks binary"),
    ("latin.md", "caf\xe9".encode("latin-1"), "not valid UTF-8"),
    ("empty.txt", b"   \n", "holds no text"),
    ("image.png", b"\x89PNG", "unsupported file type"),
])
def test_bad_files_raise_load_error_naming_the_file(tmp_path, name, content, reason):
    with pytest.raises(LoadError, match=reason) as info:
        load_file(write(tmp_path, name, content), name)
    assert info.value.source == name
