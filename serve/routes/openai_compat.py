"""kbqa as an OpenAI-compatible server: chat front ends (Open WebUI, LibreChat, the `openai` SDK, LangChain's
ChatOpenAI) talk to it as to any model.

Each collection a key may use is a model named ``kbqa-<collection>``. The last user message is the question, the
earlier user/assistant turns are the history (as in /v1/ask); system messages are ignored, because kbqa's grounding
prompt is fixed on purpose. The reply is kbqa's answer with [n] citations and a sources list after it, and a
``kbqa`` extension field holding the structured citations, ``abstained`` and ``grounding``.

Streaming sends only checked text: in generate mode the answer is streamed once the support and degeneration
checks have passed it, because a chat client cannot take back a sentence it has shown. Same keys, scopes,
collection binding and rate limits as /v1/ask; errors in OpenAI's shape (serve/app.py uses ``openai_error``).
"""
from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from retrieval.answering.engines.remote import GeneratorUnavailable
from retrieval.answering.phrases import sources_label
from retrieval.home import UnknownCollection
from serve.admission import admit
from serve.deps import QueryKey, ServiceDep
from serve.schemas import CONVERSATION_ID, AskResponse, CustomerIn, MetadataFilter

router = APIRouter(tags=["openai-compatible"])
MODEL_PREFIX = "kbqa-"
MAX_QUESTION_CHARS = 2000   # as /v1/ask
MAX_HISTORY_TURNS = 20
_OPENAI_ROUTES = ("/v1/chat/completions", "/v1/models")
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 409: "invalid_request_error", 413: "invalid_request_error",
                422: "invalid_request_error", 429: "rate_limit_error"}


def is_openai_route(path: str) -> bool:
    return path.startswith(_OPENAI_ROUTES)


def openai_error(status: int, message: str, detail: object | None = None) -> dict:
    """OpenAI's error body: the SDKs read error.message and error.type."""
    code = {404: "model_not_found", 429: "rate_limit_exceeded", 401: "invalid_api_key"}.get(status)
    return {"error": {"message": message, "type": _ERROR_TYPES.get(status, "server_error"), "param": None,
                      "code": code, "detail": detail}}


class OpenAIError(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    detail: object | None = None


class OpenAIErrorResponse(BaseModel):
    error: OpenAIError


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)   # name, tool_calls, ...: accepted and ignored
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(part.text for part in self.content)
        return self.content or ""


class ChatCompletionRequest(BaseModel):
    # Sampling settings (temperature, max_tokens, top_p, ...) are accepted and ignored: kbqa's answer is grounded
    # and deterministic whatever the client asks for. Strict as kbqa's own models: "stream": "yes" is refused.
    model_config = ConfigDict(extra="allow", strict=True)
    model: str = Field(description="kbqa-<collection>, as GET /v1/models lists them")
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=200)]
    stream: bool = False
    conversation_id: str | None = Field(None, pattern=CONVERSATION_ID, description="kbqa's extension (send it with "
                                        "the SDK's extra_body): an unhelpful rating earlier in it recommends a hand-off")
    filter: MetadataFilter = None   # kbqa's extension too (extra_body): only documents it keeps are searched
    customer: CustomerIn | None = None   # and this one: who is asking, scoped by the collection's customer rules


class ModelOut(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "kbqa"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


class OpenAIRequestError(ValueError):
    """A chat request kbqa cannot answer as asked (no user question, ...): 400 in OpenAI's shape."""


def collection_of(model: str) -> str:
    if not model.startswith(MODEL_PREFIX) or len(model) == len(MODEL_PREFIX):
        raise UnknownCollection(f"model {model!r} does not exist: kbqa's models are kbqa-<collection> "
                                "(GET /v1/models lists them)")
    return model[len(MODEL_PREFIX):]


def question_and_history(messages: list[ChatMessage]) -> tuple[str, list[dict]]:
    """The last user message is the question; the user/assistant turns before it are the history."""
    if messages[-1].role != "user":
        raise OpenAIRequestError("the last message must be the user's question (role 'user')")
    question = messages[-1].text().strip()
    if not question:
        raise OpenAIRequestError("the last user message is empty")
    if len(question) > MAX_QUESTION_CHARS:
        raise OpenAIRequestError(f"the question is over {MAX_QUESTION_CHARS} characters")
    # Earlier turns only steer the follow-up rewrite (retrieval/answering/followup.py): the recent ones, cut to the same size.
    history = [{"role": m.role, "content": m.text()[:MAX_QUESTION_CHARS]} for m in messages[:-1]
               if m.role in ("user", "assistant")]
    return question, history[-MAX_HISTORY_TURNS:]


def reply_text(answer: AskResponse) -> str:
    """The answer with its sources after it, as a chat UI shows them."""
    if answer.abstained or not answer.citations:
        return answer.answer
    sources = "\n".join(f"[{c.n}] {c.title or c.source} ({c.source})" for c in answer.citations)
    return f"{answer.answer}\n\n{sources_label(answer.language)}:\n{sources}"


def extension(answer: AskResponse) -> dict:
    return {"answer_id": answer.answer_id, "abstained": answer.abstained, "grounding": answer.grounding,
            "citations": [c.model_dump() for c in answer.citations], "answerability": answer.answerability,
            "fallback_reason": answer.fallback_reason, "rewritten_question": answer.rewritten_question,
            "handoff": answer.handoff.model_dump(), "context": answer.context}


@router.get("/v1/models", response_model=ModelList)
async def list_models(service: ServiceDep, key: QueryKey) -> ModelList:
    """The collections this key may ask, as models."""
    names = [name for name in service.collection_names() if key.can_see(name)]

    def created(name: str) -> int:
        return int(service.home.collection_dir(name).stat().st_ctime)
    return ModelList(data=[ModelOut(id=MODEL_PREFIX + name, created=created(name)) for name in names])


@router.post("/v1/chat/completions", responses={
    200: {"content": {"text/event-stream": {"description": "with stream=true: chat.completion.chunk events, then "
                                            "data: [DONE]"}}}})
async def chat_completions(body: ChatCompletionRequest, service: ServiceDep, request: Request, key: QueryKey):
    collection = collection_of(body.model)
    key.check_collection(collection)
    question, history = question_and_history(body.messages)
    customer = body.customer.sent() if body.customer else None
    completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
    base = {"id": completion_id, "created": created, "model": body.model}
    ticket = await admit(request.app.state.admission)   # as /v1/ask: a bounded number at once, 503 beyond
    if not body.stream:
        with ticket:
            answer = await run_in_threadpool(service.ask, question, 5, collection, history, body.conversation_id,
                                             key.key_id, key.narrowed(body.filter), customer)
        request.app.state.metrics.observe_answer(answer)
        out = AskResponse(**answer.to_dict())
        return {**base, "object": "chat.completion", "kbqa": extension(out), "choices": [
            {"index": 0, "message": {"role": "assistant", "content": reply_text(out)}, "finish_reason": "stop"}]}
    # Retrieval runs now: an unknown collection fails with a plain 404 before the stream starts.
    try:
        events = await run_in_threadpool(service.ask_stream, question, 5, collection, history,
                                         body.conversation_id, key.key_id, key.narrowed(body.filter), customer)
    except BaseException:
        ticket.release()
        raise

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        event = {**base, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(event)}\n\n"

    def encode():   # a sync iterator: Starlette runs it in the threadpool
        yield chunk({"role": "assistant", "content": ""})
        try:
            for kind, value in events:
                if kind != "final":
                    continue   # raw tokens are not shown: only the checked answer (see the module's docstring)
                request.app.state.metrics.observe_answer(value)
                out = AskResponse(**value.to_dict())
                yield chunk({"content": reply_text(out)})
                yield chunk({}, "stop", kbqa=extension(out))
        except GeneratorUnavailable as exc:   # the 200 is sent: the SDKs raise on an error event
            yield f"data: {json.dumps(openai_error(exc.status, str(exc), {'generator': exc.kind}))}\n\n"
        finally:
            ticket.release()
        yield "data: [DONE]\n\n"
    return StreamingResponse(encode(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"},
                             background=BackgroundTask(ticket.release))
