from fastapi import APIRouter, Path as PathParam, Query

from serve.feedback import UnknownAnswer
from serve.deps import AdminKey, QueryKey, ServiceDep
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
async def list_feedback(service: ServiceDep, key: AdminKey, limit: int = Query(100, ge=1, le=1000),
                        helpful: bool | None = None) -> list[FeedbackOut]:
    key.check_unsliced("the feedback list")
    rows = service.feedback.list_feedback(limit, helpful, None if key.collections is None else sorted(key.collections))
    return [FeedbackOut(**row) for row in rows]


@router.patch("/{feedback_id}", response_model=FeedbackCreated, responses={404: {"model": ErrorResponse}})
async def correct_feedback(body: FeedbackCorrection, service: ServiceDep, key: AdminKey,
                           feedback_id: int = PathParam(ge=1, le=2**62)) -> FeedbackCreated:
    """An admin writes the right answer for a rated one: `kbqa train-generator --from-feedback` learns from it."""
    key.check_unsliced("correcting feedback")
    collection = service.feedback.feedback_collection(feedback_id)
    if collection is None or not key.can_see(collection):   # another collection's: as if it did not exist
        raise UnknownAnswer(f"no feedback with id {feedback_id}")
    service.feedback.correct(feedback_id, body.corrected_answer)
    return FeedbackCreated(feedback_id=feedback_id)
