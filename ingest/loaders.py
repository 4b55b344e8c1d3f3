"""Turn one file into Documents. Every failure is a LoadError that names the file and the reason."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from pathlib import Path

import frontmatter

from ingest.records import MAX_ID_CHARS, Document

MAX_FILE_BYTES = 50 * 1024 * 1024
# Text one file may hold once extracted: a 4 KB PDF can expand to millions of characters. A 500-page manual
# is about 1.5M; the service sets its own (KBQA_MAX_FILE_CHARS).
MAX_FILE_CHARS = 5_000_000


class LoadError(ValueError):
    def __init__(self, source: str, reason: str):
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason

    def __reduce__(self):   # raised in a loader process (ingest/bounded.py) and re-raised here
        return LoadError, (self.source, self.reason)


def _too_long(source: str, max_chars: int) -> LoadError:
    return LoadError(source, f"holds more than {max_chars:,} characters of text once extracted "
                             "(KBQA_MAX_FILE_CHARS): split it, or raise the limit")


def _read_text(path: Path, source: str) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise LoadError(source, "looks binary (NUL bytes), not a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise LoadError(source, f"is not valid UTF-8 ({exc.reason} at byte {exc.start})") from exc


def metadata_of(fields: dict, skip: tuple[str, ...] = ()) -> dict:
    """The metadata a document carries (front matter, a record's extra fields): strings, numbers, booleans, dates (as
    ISO strings) and lists of those kept with their types; nested objects and nulls are left out."""
    def value(v):
        if isinstance(v, (dt.date, dt.datetime)):
            return v.isoformat()
        if isinstance(v, (str, bool, int, float)) and v == v:   # NaN is no value
            return v
        return None

    kept = {}
    for key, v in fields.items():
        if not isinstance(key, str) or key in skip:
            continue
        if isinstance(v, list):
            items = [value(item) for item in v]
            if items and all(item is not None for item in items):
                kept[key] = items
        elif value(v) is not None:
            kept[key] = value(v)
    return kept


def _stem_title(source: str) -> str:
    return Path(source).stem.replace("-", " ").replace("_", " ").strip().capitalize()


# --- Markdown / MDX -------------------------------------------------------------------------
_MDX_IMPORT = re.compile(r"^\s*(import|export)\s.*$", re.MULTILINE)
_ADMONITION_OPEN = re.compile(r"^\s*:::\s*(\w+)\s*(.*)$", re.MULTILINE)
_ADMONITION_CLOSE = re.compile(r"^\s*:::\s*$", re.MULTILINE)
_HTML_COMMENT = re.compile(r"<!--.*?-->|\{/\*.*?\*/\}", re.DOTALL)
_TAG = re.compile(r"</?[A-Za-z][^<>]*?/?>")  # JSX/HTML tags; their inner text stays
_JSX_EXPR = re.compile(r"\{[^{}\n]*\}")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_H1 = re.compile(r"^#\s+(.+)$", re.MULTILINE)
_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")  # keep the words, drop the URL: noise to encoders and prompts


def clean_mdx(body: str) -> str:
    """Strip MDX-only syntax (imports, JSX, admonition fences) and keep the prose and code."""
    fences: list[str] = []

    def stash(match: re.Match) -> str:  # code blocks are content: keep them untouched
        fences.append(match.group(0))
        return f"\x00FENCE{len(fences) - 1}\x00"

    body = _FENCE.sub(stash, body)
    body = _HTML_COMMENT.sub("", body)
    body = _MDX_IMPORT.sub("", body)
    body = _ADMONITION_OPEN.sub(lambda m: f"{m.group(1).capitalize()}: {m.group(2)}".rstrip(": ") + ":", body)
    body = _ADMONITION_CLOSE.sub("", body)
    body = _TAG.sub("", body)
    body = _JSX_EXPR.sub("", body)
    body = _IMAGE.sub("", body)
    body = _LINK.sub(r"\1", body)
    body = re.sub(r"\x00FENCE(\d+)\x00", lambda m: fences[int(m.group(1))], body)
    return re.sub(r"\n{3,}", "\n\n", body).strip()


def load_markdown(path: Path, source: str) -> list[Document]:
    try:
        post = frontmatter.loads(_read_text(path, source))
    except LoadError:
        raise
    except Exception as exc:  # malformed YAML front matter
        raise LoadError(source, f"has unreadable front matter ({exc})") from exc
    text = clean_mdx(post.content)
    h1 = _H1.search(text)
    title = str(post.metadata.get("title") or (h1.group(1).strip() if h1 else _stem_title(source)))
    meta = metadata_of(post.metadata)
    return [Document(doc_id=source, source=source, title=title, text=text, metadata=meta, markdown=True)]


# --- HTML -----------------------------------------------------------------------------------
_BOILERPLATE = "script, style, noscript, nav, header, footer, aside, form, svg, iframe, [role=navigation]"


def load_html(path: Path, source: str) -> list[Document]:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(_read_text(path, source))
    title_node = tree.css_first("title")
    for node in tree.css(_BOILERPLATE):
        node.decompose()
    main = tree.css_first("main") or tree.css_first("article") or tree.css_first("[role=main]") or tree.body
    if main is None:
        raise LoadError(source, "has no <body> to read")
    # Headings become Markdown headings so the chunker can follow the structure.
    for level in range(1, 7):
        for node in main.css(f"h{level}"):
            node.replace_with(f"\n\n{'#' * level} {node.text(strip=True)}\n\n")
    text = main.text(separator="\n", strip=False)
    text = re.sub(r"[ \t]+", " ", text)
    text = re.sub(r"\n\s*\n\s*", "\n\n", text)
    text = re.sub(r"(?<!\n)\n(?!\n)", " ", text)  # inline tags split sentences with single newlines
    text = re.sub(r" ([.,;:!?])", r"\1", re.sub(r" {2,}", " ", text)).strip()
    h1 = _H1.search(text)
    title = (title_node.text(strip=True) if title_node else "") or (h1.group(1) if h1 else _stem_title(source))
    return [Document(doc_id=source, source=source, title=title, text=text, markdown=True)]


# --- plain text and PDF ---------------------------------------------------------------------
def load_text(path: Path, source: str) -> list[Document]:
    text = _read_text(path, source).strip()
    return [Document(doc_id=source, source=source, title=_stem_title(source), text=text)]


def load_pdf(path: Path, source: str, max_chars: int = MAX_FILE_CHARS) -> list[Document]:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(path)
        pages, chars = [], 0
        for page in reader.pages:   # stop at the cap: the rest of a 70 MB text layer is never extracted
            pages.append(page.extract_text() or "")
            chars += len(pages[-1])
            if chars > max_chars:
                raise _too_long(source, max_chars)
        title = (reader.metadata.title if reader.metadata else None) or _stem_title(source)
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        raise LoadError(source, f"is not a readable PDF ({type(exc).__name__}: {exc})") from exc
    text = "\n\n".join(p.strip() for p in pages if p.strip())
    if not text:
        raise LoadError(source, "has no text layer (scanned PDF?); OCR it first")
    return [Document(doc_id=source, source=source, title=str(title), text=text, metadata={"pages": str(len(pages))})]


# --- FAQ files: CSV with question/answer columns, JSON/JSONL records {id, title, text} ---------
def load_csv(path: Path, source: str) -> list[Document]:
    try:
        rows = list(csv.DictReader(io.StringIO(_read_text(path, source))))
    except csv.Error as exc:
        raise LoadError(source, f"is not valid CSV ({exc})") from exc
    if not rows:
        return []
    columns = {name.strip().lower(): name for name in rows[0] if name}
    if "question" not in columns or "answer" not in columns:
        raise LoadError(source, f"needs 'question' and 'answer' columns, found {sorted(columns)}")
    docs = []
    for n, row in enumerate(rows, start=1):
        question = (row.get(columns["question"]) or "").strip()
        answer = (row.get(columns["answer"]) or "").strip()
        if not question or not answer:
            continue
        row_id = (row.get(columns["id"]) or "").strip() if "id" in columns else ""
        doc_id = row_id or f"{source}#{n}"
        extra = {name.strip(): (row.get(name) or "").strip() for key, name in columns.items()
                 if key not in ("id", "question", "answer") and (row.get(name) or "").strip()}
        docs.append(Document(doc_id=doc_id, source=doc_id, title=question, text=f"{question}\n{answer}",
                             metadata=extra))
    return docs


def _record(obj: object, source: str, where: str) -> Document:
    if not isinstance(obj, dict):
        raise LoadError(source, f"{where}: expected an object {{id, title, text}}, got {type(obj).__name__}")
    doc_id, text = obj.get("id"), obj.get("text")
    # JSON true is not the id "True": a boolean (an int to Python) is refused, a number is its digits.
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or str(doc_id).strip() == "":
        raise LoadError(source, f"{where}: record needs a non-empty 'id' (a string or an integer)")
    if not isinstance(text, str):
        raise LoadError(source, f"{where}: record {doc_id!r} needs a string 'text'")
    title = obj.get("title") if isinstance(obj.get("title"), str) else str(doc_id)
    # The record's other fields are its metadata (an explicit "metadata" object too), as in LangChain's documents.
    fields = {**obj, **(obj["metadata"] if isinstance(obj.get("metadata"), dict) else {})}
    return Document(doc_id=str(doc_id), source=str(doc_id), title=title, text=text.strip(),
                    metadata=metadata_of(fields, skip=("id", "title", "text", "metadata")))


def load_json(path: Path, source: str) -> list[Document]:
    raw = _read_text(path, source)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise LoadError(source, f"is not valid JSON ({exc})") from exc
    records = data if isinstance(data, list) else [data]
    return [_record(obj, source, f"record {i}") for i, obj in enumerate(records)]


def load_jsonl(path: Path, source: str) -> list[Document]:
    docs = []
    for line_no, line in enumerate(_read_text(path, source).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LoadError(source, f"line {line_no} is not valid JSON ({exc.msg})") from exc
        docs.append(_record(obj, source, f"line {line_no}"))
    return docs


LOADERS = {
    ".md": load_markdown, ".mdx": load_markdown, ".markdown": load_markdown,
    ".html": load_html, ".htm": load_html,
    ".txt": load_text, ".text": load_text,
    ".pdf": load_pdf,
    ".csv": load_csv,
    ".json": load_json, ".jsonl": load_jsonl,
}


def supported(path: Path) -> bool:
    return path.suffix.lower() in LOADERS


def load_file(path: Path, source: str, max_chars: int = MAX_FILE_CHARS) -> list[Document]:
    """All documents in one file; raises LoadError for anything unreadable or empty, or over ``max_chars``."""
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        raise LoadError(source, f"unsupported file type {path.suffix!r}; supported: {', '.join(sorted(LOADERS))}")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise LoadError(source, f"is larger than {MAX_FILE_BYTES // (1024 * 1024)} MB")
    loaded = loader(path, source, max_chars) if loader is load_pdf else loader(path, source)
    if sum(len(d.text) for d in loaded) > max_chars:
        raise _too_long(source, max_chars)
    docs = [d for d in loaded if d.text.strip()]
    if not docs:
        raise LoadError(source, "holds no text")
    ids = [d.doc_id for d in docs]
    too_long = next((i for i in ids if len(i) > MAX_ID_CHARS), None)
    if too_long is not None:   # the records route's limit, so every path stores the same ids
        raise LoadError(source, f"document id {too_long[:60]!r}... is longer than {MAX_ID_CHARS} characters")
    if len(set(ids)) != len(ids):
        raise LoadError(source, "has duplicate record ids")
    return docs
