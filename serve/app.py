"""FastAPI application: models load once in lifespan; every error leaves as JSON with a 4xx where it is the caller's."""
from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from retrieval.collection import CollectionBusy
from retrieval.collection_encoder import EncoderMismatch
from retrieval.home import InvalidName, UnknownCollection
from retrieval.answering.engines.remote import GeneratorUnavailable
from retrieval.model_store import ModelNotReady
from serve.admission import AdmissionGate, Overloaded
from serve.auth import AuthError, KeyStore, RateLimiter
from serve.body_limit import BodyLimit
from serve.customer import RulesError
from serve.documents import MAX_UPLOAD_BYTES, UnknownDocument, UploadRejected
from serve.feedback import UnknownAnswer
from serve.metrics import Metrics
from serve.jobs import UnknownJob
from serve.routes import (ask, chat, collections, distill, documents, feedback, gaps, health, keys, openai_compat,
                          search)
from serve.routes.openai_compat import OpenAIErrorResponse, OpenAIRequestError, is_openai_route, openai_error
from serve.schemas import ErrorResponse
from serve.service import CollectionExists, KbqaService
from serve.settings import Settings

MAX_BODY_BYTES = 64 * 1024
log = logging.getLogger("kbqa.serve")


def _error(status: int, message: str, detail: object | None = None, request: Request | None = None) -> JSONResponse:
    """kbqa's error body; on the OpenAI-compatible routes, OpenAI's (serve/routes/openai_compat.py)."""
    if request is not None and is_openai_route(request.url.path):
        return JSONResponse(status_code=status, content=openai_error(status, message, detail))
    return JSONResponse(status_code=status, content={"error": message, "detail": detail})


def _error_body(status: int, message: str, path: str) -> dict:
    """The body of an error raised before the app (serve/body_limit.py), in the route's shape as ``_error``."""
    return openai_error(status, message) if is_openai_route(path) else {"error": message, "detail": None}


def _status_handler(status: int):
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return _error(status, str(exc), request=request)

    return handler


def body_limit(method: str, path: str) -> tuple[int, bool]:
    """Questions are short, uploads are not."""
    is_upload = method == "POST" and path.endswith(("/documents", "/documents/records"))
    return (MAX_UPLOAD_BYTES if is_upload else MAX_BODY_BYTES), is_upload


def create_app(settings: Settings | None = None, service: KbqaService | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.service = service or KbqaService.load(settings)
        pipeline = app.state.service.pipeline
        writer = pipeline.writer if pipeline is not None else None
        batch = getattr(writer.generator if writer is not None else None, "max_batch", 1)
        if settings.answer_slots is None and batch > 1:   # the embedded generator batches (GPU): one slot a row
            app.state.admission = AdmissionGate(batch, settings.answer_queue, settings.answer_max_wait_s)
        remote = app.state.service.remote_generator()
        if remote is not None:   # its calls feed Prometheus (serve/metrics.py)
            remote.observer = app.state.metrics.observe_remote
        app.state.keys = KeyStore(settings.kbqa_home.root / "keys.sqlite")
        # Decided once, here: keyless mode only while no key was ever created (serve/auth.py), loopback clients only.
        app.state.keyed = app.state.keys.ever_keyed()
        if not app.state.keyed:
            log.warning("NO API KEYS CONFIGURED: keyless local mode, loopback clients only (others get 403). "
                        "Create keys with `kbqa keys create` before exposing this server beyond 127.0.0.1.")
        elif not app.state.keys.any_active():
            log.warning("every API key is revoked: every request will be refused (401) until "
                        "`kbqa keys create --name NAME --scope admin` is run on this machine")
        yield
        app.state.service.close()
        app.state.keys.close()

    app = FastAPI(title="kbqa", version="0.1.0", lifespan=lifespan,
                  description="Grounded question answering over a knowledge base.")
    # Every error leaves as ErrorResponse, validation errors included: say so in the schema.
    errors = {status: {"model": ErrorResponse} for status in (401, 403, 413, 422, 429)}
    for module in (search, ask, collections, documents, distill, feedback, gaps, keys, health, chat):
        app.include_router(module.router, responses=errors)
    app.include_router(openai_compat.router, responses={
        status: {"model": OpenAIErrorResponse} for status in (400, 401, 403, 404, 413, 422, 429, 502, 503, 504)})
    app.state.metrics = Metrics()
    app.state.limiter = RateLimiter(settings.rate_limit_per_minute)
    app.state.admission = AdmissionGate(settings.resolved_answer_slots, settings.answer_queue,
                                        settings.answer_max_wait_s)
    app.state.auth_failures = RateLimiter(settings.auth_failures_per_minute)

    @app.middleware("http")
    async def count_and_time(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        # The route template, not the raw path: /v1/collections/{name} is one series, not one per name.
        route = getattr(request.scope.get("route"), "path", "unmatched")
        app.state.metrics.requests.labels(route, request.method, str(response.status_code)).inc()
        app.state.metrics.latency.labels(route).observe(time.perf_counter() - start)
        return response

    # Outermost: oversized bodies are refused before anything reads them (serve/body_limit.py).
    app.add_middleware(BodyLimit, limit_of=body_limit, error_body=_error_body)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [{"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()]
        return _error(422, "invalid request", problems, request)

    # The caller's mistakes and known states map to 4xx/503 with the message that names the fix. Anything else
    # is the server's fault: 500 with a JSON body and the traceback in the log, never dressed up as a 4xx.
    for error_type, status in ((UnknownCollection, 404), (UnknownAnswer, 404), (UnknownDocument, 404),
                              (UnknownJob, 404), (CollectionExists, 409), (InvalidName, 422),
                              (EncoderMismatch, 409), (ModelNotReady, 503), (OpenAIRequestError, 400),
                              (RulesError, 422)):
        app.add_exception_handler(error_type, _status_handler(status))

    @app.exception_handler(GeneratorUnavailable)
    async def generator_unavailable(request: Request, exc: GeneratorUnavailable) -> JSONResponse:
        # KBQA_GENERATOR_FALLBACK=error: the remote generator's failure is the gateway's, not ours: 502 or 504.
        log.warning("%s %s: %s", request.method, request.url.path, exc)
        return _error(exc.status, str(exc), {"generator": exc.kind}, request)

    @app.exception_handler(Exception)
    async def server_fault(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal error ({type(exc).__name__}); the server log has the details", request=request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unmatched paths and wrong methods too: every error body has the same shape.
        response = _error(exc.status_code, str(exc.detail), request=request)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(AuthError)
    async def auth_error(request: Request, exc: AuthError) -> JSONResponse:
        response = _error(exc.status, str(exc), request=request)
        if exc.retry_after is not None:
            response.headers["Retry-After"] = str(exc.retry_after)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        app.state.metrics.rejected_answers.inc()
        response = _error(503, str(exc), {"retry_after_s": exc.retry_after}, request)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(CollectionBusy)
    async def collection_busy(request: Request, exc: CollectionBusy) -> JSONResponse:
        response = _error(503, str(exc), {"retry_after_s": 30}, request)
        response.headers["Retry-After"] = "30"
        return response

    @app.exception_handler(UploadRejected)
    async def upload_rejected(request: Request, exc: UploadRejected) -> JSONResponse:
        return _error(exc.status, str(exc), request=request)

    return app
