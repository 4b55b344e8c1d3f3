import json

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from retrieval.answering.engines.remote import GeneratorUnavailable
from serve.admission import admit
from serve.deps import QueryKey, ServiceDep
from serve.schemas import AskRequest, AskResponse, ErrorResponse

router = APIRouter()


def _sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


@router.post("/v1/ask", response_model=AskResponse, responses={
    404: {"model": ErrorResponse},
    502: {"model": ErrorResponse, "description": "the remote generator failed (KBQA_GENERATOR_FALLBACK=error)"},
    503: {"model": ErrorResponse, "description": "every answer slot busy and the queue full: retry after "
                                                 "the Retry-After header's seconds"},
    504: {"model": ErrorResponse, "description": "the remote generator timed out (KBQA_GENERATOR_FALLBACK=error)"},
    200: {"content": {"text/event-stream": {"description": "with stream=true: token events, then a final event"}}}})
async def ask(body: AskRequest, service: ServiceDep, request: Request, key: QueryKey):
    key.check_collection(body.collection)
    history = [turn.model_dump() for turn in body.history]
    customer = body.customer.sent() if body.customer else None
    # Retrieval and generation are CPU-bound: keep them off the event loop, a bounded number at once (503 beyond).
    ticket = await admit(request.app.state.admission)
    if not body.stream:
        with ticket:
            answer = await run_in_threadpool(service.ask, body.question, body.k, body.collection, history,
                                             body.conversation_id, key.key_id, key.narrowed(body.filter), customer)
        request.app.state.metrics.observe_answer(answer)
        return AskResponse(**answer.to_dict())
    try:
        events = await run_in_threadpool(service.ask_stream, body.question, body.k, body.collection, history,
                                         body.conversation_id, key.key_id, key.narrowed(body.filter), customer)
    except BaseException:
        ticket.release()
        raise

    def encode():  # a sync iterator: Starlette runs it in the threadpool, piece by piece
        try:
            for kind, value in events:
                if kind == "token":
                    yield _sse("token", {"text": value})
                else:
                    request.app.state.metrics.observe_answer(value)
                    yield _sse("final", AskResponse(**value.to_dict()).model_dump())
        except GeneratorUnavailable as exc:   # the 200 is sent: the failure is the stream's last event
            yield _sse("error", {"error": str(exc), "status": exc.status, "detail": {"generator": exc.kind}})
        finally:
            ticket.release()
    # The slot is freed when the stream ends, and by the clean-up task if the client left before it began.
    return StreamingResponse(encode(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"},
                             background=BackgroundTask(ticket.release))
