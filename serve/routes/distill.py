from fastapi import APIRouter

from serve.schemas import CollectionPath
from serve.deps import AdminKey, ServiceDep
from serve.schemas import ErrorResponse, JobOut

router = APIRouter(prefix="/v1/collections/{collection}/distill", tags=["distill"])


@router.post("", status_code=202, response_model=JobOut, responses={404: {"model": ErrorResponse}})
async def start(collection: CollectionPath, service: ServiceDep, key: AdminKey) -> JobOut:
    """Queue a distillation of this collection's encoder; answers go on meanwhile."""
    key.check_collection(collection)
    key.check_unsliced("distillation")
    service.collection(collection)  # 404 now rather than a failed job later
    return JobOut(**service.jobs.submit(collection).to_dict())


@router.get("", response_model=list[JobOut])
async def list_jobs(collection: CollectionPath, service: ServiceDep, key: AdminKey) -> list[JobOut]:
    key.check_collection(collection)
    key.check_unsliced("distillation")
    return [JobOut(**j.to_dict()) for j in service.jobs.list(collection)]


@router.get("/{job_id}", response_model=JobOut, responses={404: {"model": ErrorResponse}})
async def get_job(collection: CollectionPath, job_id: str, service: ServiceDep, key: AdminKey) -> JobOut:
    key.check_collection(collection)
    key.check_unsliced("distillation")
    return JobOut(**service.jobs.get(job_id, collection).to_dict())
