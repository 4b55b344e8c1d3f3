import json

from fastapi import APIRouter, File, Form, UploadFile
from starlette.concurrency import run_in_threadpool

from serve.schemas import CollectionPath
from serve.deps import AdminKey, ServiceDep
from serve.documents import MAX_FILE_BYTES, UnknownDocument, check_file_count, check_metadata
from serve.schemas import DocumentDeleted, DocumentDetail, DocumentOut, ErrorResponse, RecordsUpload, UploadReport

router = APIRouter(prefix="/v1/collections/{collection}/documents", tags=["documents"])
_ERRORS = {status: {"model": ErrorResponse} for status in (404, 411, 413, 415)}
METADATA_PART = 'JSON {"file name": {"field": value}}: metadata each file\'s documents carry over their own'



@router.post("", status_code=201, response_model=UploadReport, responses=_ERRORS)
async def upload(collection: CollectionPath, service: ServiceDep, key: AdminKey,
                 files: list[UploadFile] = File(..., min_length=1),
                 metadata: str | None = Form(None, description=METADATA_PART)) -> UploadReport:
    """Add or replace files (md, mdx, html, txt, pdf, csv, json, jsonl), at most 50 per upload (413 beyond);
    ingested incrementally. A file whose bytes are unchanged but whose metadata changed is re-committed, not
    re-embedded."""
    key.check_collection(collection)
    key.check_unsliced("uploading documents")
    check_file_count(len(files))   # before any file is read
    # Read one byte past the limit: enough to refuse an oversized file without holding all of it.
    payload = [(f.filename or "", await f.read(MAX_FILE_BYTES + 1)) for f in files]
    fields = check_metadata(metadata, [name for name, _ in payload])
    target = service.collection(collection)
    report = await run_in_threadpool(service.documents.upload, target, payload, fields)
    return UploadReport(**report.to_dict())


@router.post("/records", status_code=201, response_model=UploadReport, responses=_ERRORS)
async def upload_records(collection: CollectionPath, body: RecordsUpload, service: ServiceDep,
                         key: AdminKey) -> UploadReport:
    """Add or replace a set of JSON records ({"id", "title", "text", ...}) as one JSONL document file."""
    key.check_collection(collection)
    key.check_unsliced("uploading documents")
    lines = "".join(json.dumps(r.model_dump()) + "\n" for r in body.records).encode()
    target = service.collection(collection)
    report = await run_in_threadpool(service.documents.upload, target, [(f"{body.name}.jsonl", lines)])
    return UploadReport(**report.to_dict())


@router.get("", response_model=list[DocumentOut], responses=_ERRORS)
async def list_documents(collection: CollectionPath, service: ServiceDep, key: AdminKey) -> list[DocumentOut]:
    key.check_collection(collection)
    return [DocumentOut(**d) for d in service.collection(collection).store.documents()
            if key.sees_document(d["metadata"])]


@router.get("/{doc_id:path}", response_model=DocumentDetail, responses=_ERRORS)
async def get_document(collection: CollectionPath, doc_id: str, service: ServiceDep, key: AdminKey) -> DocumentDetail:
    key.check_collection(collection)
    document = service.collection(collection).store.document(doc_id)
    if document is None or not key.sees_document(document["metadata"]):
        raise UnknownDocument(f"no document {doc_id!r} in collection {collection!r}")
    return DocumentDetail(**document)


@router.delete("/{doc_id:path}", response_model=DocumentDeleted, responses=_ERRORS)
async def delete_document(collection: CollectionPath, doc_id: str, service: ServiceDep,
                          key: AdminKey) -> DocumentDeleted:
    """Removes the file the document came from. A file ingested by `kbqa ingest` comes back on the next
    ingest of its folder: delete it there too."""
    key.check_collection(collection)
    key.check_unsliced("deleting documents")
    target = service.collection(collection)
    return DocumentDeleted(**await run_in_threadpool(service.documents.delete, target, doc_id))
