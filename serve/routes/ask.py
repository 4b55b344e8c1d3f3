from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from serve.deps import ServiceDep
from serve.schemas import AskRequest, AskResponse, ErrorResponse

router = APIRouter()


@router.post("/v1/ask", response_model=AskResponse, responses={404: {"model": ErrorResponse}})
async def ask(body: AskRequest, service: ServiceDep) -> AskResponse:
    # Retrieval and generation are CPU-bound: keep them off the event loop.
    answer = await run_in_threadpool(service.ask, body.question, body.k, body.collection)
    return AskResponse(**answer.to_dict())
