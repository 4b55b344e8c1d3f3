from pathlib import Path

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from serve.deps import AdminKey, ServiceDep, slice_keys
from serve.gaps import DEFAULT_THRESHOLD, gap_report
from serve.schemas import CollectionPath, ErrorResponse, GapReport

router = APIRouter(tags=["gaps"])
GAPS_PAGE = Path(__file__).resolve().parents[1] / "static" / "gaps.html"


@router.get("/v1/collections/{name}/gaps", response_model=GapReport, responses={404: {"model": ErrorResponse}})
async def gaps(name: CollectionPath, service: ServiceDep, key: AdminKey, request: Request,
               since_days: float = Query(30.0, gt=0, le=3650),
               threshold: float = Query(DEFAULT_THRESHOLD, ge=0.0, le=1.0)) -> GapReport:
    """Questions abstained on or rated unhelpful, clustered, largest first: what the docs should cover next. A key
    bound to a slice sees the questions its slice's keys asked, against its slice's documents."""
    key.check_collection(name)
    key_ids = slice_keys(request, key)
    return GapReport(**await run_in_threadpool(lambda: gap_report(service, name, since_days, threshold,
                                                                  key_ids=key_ids, filter=key.filter)))


@router.get("/gaps", response_class=HTMLResponse, include_in_schema=False)
async def gaps_page() -> HTMLResponse:
    """The content-gap report for the docs team (needs an admin key when keys are in use)."""
    return HTMLResponse(GAPS_PAGE.read_text(encoding="utf-8"))
