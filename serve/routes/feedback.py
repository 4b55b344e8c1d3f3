from fastapi import APIRouter, Query

from serve.deps import ServiceDep
from serve.schemas import ErrorResponse, FeedbackCreated, FeedbackOut, FeedbackRequest

router = APIRouter(prefix="/v1/feedback", tags=["feedback"])


@router.post("", status_code=201, response_model=FeedbackCreated, responses={404: {"model": ErrorResponse}})
async def add_feedback(body: FeedbackRequest, service: ServiceDep) -> FeedbackCreated:
    return FeedbackCreated(feedback_id=service.feedback.add_feedback(body.answer_id, body.helpful, body.comment))


@router.get("", response_model=list[FeedbackOut])
async def list_feedback(service: ServiceDep, limit: int = Query(100, ge=1, le=1000),
                        helpful: bool | None = None) -> list[FeedbackOut]:
    return [FeedbackOut(**row) for row in service.feedback.list_feedback(limit, helpful)]
