from fastapi import APIRouter

from serve.deps import ServiceDep

router = APIRouter()


@router.get("/healthz")
async def healthz(service: ServiceDep) -> dict:
    return {"status": "ok", "encoder": service.encoder.encoder_id, "collections": service.collection_names()}
