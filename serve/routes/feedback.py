from fastapi import APIRouter, Path as PathParam, Query, Request

from serve.feedback import UnknownAnswer
from serve.deps import AdminKey, QueryKey, ServiceDep, slice_keys
from serve.schemas import ErrorResponse, FeedbackCorrection, FeedbackCreated, FeedbackOut, FeedbackRequest

router = APIRouter(prefix="/v1/feedback", tags=["feedback"])


@router.post("", status_code=201, response_model=FeedbackCreated, responses={404: {"model": ErrorResponse}})
async def add_feedback(body: FeedbackRequest, service: ServiceDep, key: QueryKey) -> FeedbackCreated:
    collection = service.feedback.answer_collection(body.answer_id)
    if collection is not None and not key.can_see(collection):
        collection = None  # another collection's answer: as if it did not exist
    if collection is None:
        raise UnknownAnswer(f"no answer with id {body.answer_id!r}")
    return FeedbackCreated(feedback_id=service.feedback.add_feedback(body.answer_id, body.helpful, body.comment))


@router.get("", response_model=list[FeedbackOut])
async def list_feedback(service: ServiceDep, key: AdminKey, request: Request, limit: int = Query(100, ge=1, le=1000),
                        helpful: bool | None = None) -> list[FeedbackOut]:
    """A key bound to a slice lists the feedback on answers its slice's keys asked for (serve/auth.py)."""
    rows = service.feedback.list_feedback(limit, helpful, None if key.collections is None else sorted(key.collections),
                                          slice_keys(request, key))
    return [FeedbackOut(**row) for row in rows]


@router.patch("/{feedback_id}", response_model=FeedbackCreated, responses={404: {"model": ErrorResponse}})
async def correct_feedback(body: FeedbackCorrection, service: ServiceDep, key: AdminKey, request: Request,
                           feedback_id: int = PathParam(ge=1, le=2**62)) -> FeedbackCreated:
    """An admin writes the right answer for a rated one: `kbqa train-generator --from-feedback` learns from it."""
    owner = service.feedback.feedback_owner(feedback_id)
    readers = slice_keys(request, key)
    # another collection's, or another slice's: as if it did not exist
    if owner is None or not key.can_see(owner[0]) or (readers is not None and owner[1] not in readers):
        raise UnknownAnswer(f"no feedback with id {feedback_id}")
    service.feedback.correct(feedback_id, body.corrected_answer)
    return FeedbackCreated(feedback_id=feedback_id)
