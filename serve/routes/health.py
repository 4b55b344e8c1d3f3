import logging

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from serve.auth import AuthError
from serve.deps import AdminKey, ServiceDep

router = APIRouter(tags=["health"])
log = logging.getLogger("kbqa.serve")


@router.get("/healthz")
async def healthz() -> dict:
    """Alive. Nothing else: it needs no key, so it names no collection."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "not ready: the problems are named"}})
async def readyz(service: ServiceDep):
    """Ready to answer: models loaded and every collection's index open. It needs no key (probes), so failing
    collections are counted here and named in the server log."""
    problems = {}
    if service.pipeline is None:
        problems["generator"] = "not loaded"

    def open_all() -> None:
        failed = 0
        for name in service.collection_names():
            try:
                service.collection(name).refresh()
            except Exception as exc:  # any failure to open is a reason not to be ready
                log.error("collection %s cannot be opened: %s", name, exc)
                failed += 1
        if failed:
            problems["collections"] = f"{failed} cannot be opened (named in the server log)"

    await run_in_threadpool(open_all)
    content = {"ready": True, "problems": problems}
    remote = service.remote_generator()
    if remote is not None:
        # Unreachable with a fallback declared: still ready (answers come, degraded); without one: not ready.
        reachable, why = await run_in_threadpool(remote.probe)
        fallback = service.pipeline.writer.fallback
        health = remote.health
        content["generator"] = {"remote": True, "reachable": reachable, "probe": why, "fallback": fallback,
                                "last_call_ok": health.last_ok, "last_call_seconds": health.last_seconds,
                                "failures": dict(health.failures)}
        if not reachable and fallback == "error":
            problems["generator"] = f"remote generator {why} and KBQA_GENERATOR_FALLBACK=error"
    content["ready"] = not problems
    return JSONResponse(status_code=503 if problems else 200, content=content)


@router.get("/metrics", response_class=PlainTextResponse,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
async def metrics(request: Request, service: ServiceDep, key: AdminKey) -> Response:
    """Prometheus text: it names every collection and counts every tenant's answers, so with keys in use it needs an
    admin key bound to no collection (a bound one gets 403)."""
    if key.collections is not None or key.filter is not None:
        raise AuthError(403, "metrics cover every collection: they need an admin key bound to no collection")
    gauge = request.app.state.metrics.index_vectors

    def sizes() -> None:
        for name in service.collection_names():
            gauge.labels(name).set(service.collection(name).index.size)

    await run_in_threadpool(sizes)
    gate = request.app.state.admission
    request.app.state.metrics.answer_slots.labels("active").set(gate.active)
    request.app.state.metrics.answer_slots.labels("waiting").set(gate.waiting)
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
