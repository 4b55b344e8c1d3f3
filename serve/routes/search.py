from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from serve.deps import QueryKey, ServiceDep
from serve.schemas import ErrorResponse, SearchRequest, SearchResponse
from serve.service import hit_to_dict

router = APIRouter()


@router.post("/v1/search", response_model=SearchResponse, responses={404: {"model": ErrorResponse}})
async def search(body: SearchRequest, service: ServiceDep, key: QueryKey) -> SearchResponse:
    key.check_collection(body.collection)
    hits = await run_in_threadpool(service.search, body.query, body.k, body.collection, key.narrowed(body.filter))
    return SearchResponse(query=body.query, results=[hit_to_dict(h) for h in hits])
