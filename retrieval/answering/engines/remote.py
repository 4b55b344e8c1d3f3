"""A generator behind any OpenAI-compatible `/v1/chat/completions` server (vLLM, llama.cpp's server, Ollama, TGI).

It takes the same grounded messages as the embedded generator (prompt.py:build_messages) and streams the same
way, so everything the pipeline enforces (the gates, citations only to prompt passages, the support check, the
degeneration guard, abstention) applies to its text unchanged. Every way the remote can fail (refused, timeout, a
non-2xx status, malformed JSON or stream, an empty answer) becomes one exception, ``GeneratorUnavailable``, with
the HTTP status kbqa should answer with (502, or 504 for a timeout); the pipeline's writer then errors or falls back.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

import httpx
from httpx_sse import EventSource, SSEError

from retrieval.answering.engines.base import GeneratorEngine


class GeneratorUnavailable(RuntimeError):
    """The remote generator did not produce an answer; ``status`` is 502 (bad gateway) or 504 (timeout)."""

    def __init__(self, message: str, status: int = 502, kind: str = "error"):
        super().__init__(message)
        self.status = status
        self.kind = kind   # refused | timeout | status | malformed | empty: the metrics label


@dataclass
class RemoteHealth:
    """What /readyz and /metrics say of the remote: the last call's outcome and latency, failures by kind."""
    calls: int = 0
    last_ok: bool | None = None        # None: never called yet
    last_error: str | None = None
    last_seconds: float | None = None
    failures: dict[str, int] = field(default_factory=dict)

    def record(self, seconds: float, error: GeneratorUnavailable | None) -> None:
        self.calls += 1
        self.last_seconds = round(seconds, 4)
        self.last_ok = error is None
        self.last_error = None if error is None else str(error)
        if error is not None:
            self.failures[error.kind] = self.failures.get(error.kind, 0) + 1


def chat_url(base_url: str) -> str:
    """Accept the server root or its /v1 (what each engine's docs print) and name the chat endpoint."""
    base = base_url.rstrip("/")
    return f"{base}/chat/completions" if base.endswith("/v1") else f"{base}/v1/chat/completions"


class RemoteGenerator(GeneratorEngine):
    """Greedy (temperature 0) streamed chat completions from ``base_url``; ``model`` is the served model's name."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 60.0,
                 max_new_tokens: int = 96, connect_timeout_s: float = 5.0, observer=None):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"generator URL must start with http:// or https://, got {base_url!r}")
        self.url = chat_url(base_url)
        self.models_url = self.url.rsplit("/chat/completions", 1)[0] + "/models"
        self.model = model
        self.name = f"remote:{model}"
        self.max_new_tokens = max_new_tokens
        self.timeout = httpx.Timeout(timeout_s, connect=connect_timeout_s)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(headers=headers, timeout=self.timeout)
        self.health = RemoteHealth()
        self.observer = observer   # called (seconds, GeneratorUnavailable | None) after each call: Prometheus
        self._health_lock = threading.Lock()

    def _record(self, seconds: float, error: GeneratorUnavailable | None) -> None:
        with self._health_lock:
            self.health.record(seconds, error)
        if self.observer is not None:
            self.observer(seconds, error)

    def stream(self, messages: list[dict], stats: dict | None = None):
        """Yields text pieces as the remote writes them; fills stats (prompt_tokens, new_tokens, truncated)."""
        start = time.perf_counter()
        try:
            yield from self._stream(messages, stats if stats is not None else {})
        except GeneratorUnavailable as exc:
            self._record(time.perf_counter() - start, exc)
            raise
        self._record(time.perf_counter() - start, None)

    def _stream(self, messages: list[dict], stats: dict):
        body = {"model": self.model, "messages": messages, "stream": True, "temperature": 0.0,
                "max_tokens": self.max_new_tokens, "stream_options": {"include_usage": True}}
        pieces = 0
        finish = None
        try:
            with self.client.stream("POST", self.url, json=body) as response:
                if response.status_code >= 300:
                    detail = response.read().decode("utf-8", "replace")[:300]
                    raise GeneratorUnavailable(
                        f"generator at {self.url} answered HTTP {response.status_code}: {detail}", 502, "status")
                for event in _events(response):
                    if event.get("usage"):
                        stats["prompt_tokens"] = int(event["usage"].get("prompt_tokens") or 0)
                        stats["new_tokens"] = int(event["usage"].get("completion_tokens") or 0)
                    for choice in event.get("choices") or []:
                        finish = choice.get("finish_reason") or finish
                        text = (choice.get("delta") or {}).get("content")
                        if text:
                            pieces += 1
                            yield text
        except (AttributeError, TypeError, ValueError) as exc:   # fields of the wrong type in a parsed event
            raise GeneratorUnavailable(f"generator sent a malformed stream event: {exc}", 502, "malformed") from exc
        except httpx.TimeoutException as exc:
            raise GeneratorUnavailable(f"generator at {self.url} timed out ({type(exc).__name__})", 504,
                                       "timeout") from exc
        except httpx.HTTPError as exc:   # refused, reset, protocol errors
            raise GeneratorUnavailable(f"generator at {self.url} unreachable: {exc}", 502, "refused") from exc
        if pieces == 0:
            raise GeneratorUnavailable(f"generator at {self.url} returned an empty answer", 502, "empty")
        # The degeneration guard's "cut by the budget" signal: the server says so itself.
        stats["truncated"] = finish == "length"

    def probe(self, timeout_s: float = 2.0) -> tuple[bool, str]:
        """(reachable, why): GET /v1/models, which every engine serves; for /readyz, so kept short."""
        try:
            response = self.client.get(self.models_url, timeout=timeout_s)
        except httpx.HTTPError as exc:
            return False, f"unreachable: {type(exc).__name__}"
        if response.status_code >= 300:
            return False, f"HTTP {response.status_code}"
        return True, "ok"

    def close(self) -> None:
        self.client.close()


def _events(response: httpx.Response):
    """The stream's event objects up to [DONE]. A server that ignored stream=true and sent one chat.completion
    gives one event holding its whole message."""
    if response.headers.get("content-type", "").startswith("application/json"):
        whole = _parse_event(response.read().decode("utf-8", "replace"))
        choices = [{"delta": c.get("message") or {}, "finish_reason": c.get("finish_reason")}
                   for c in whole.get("choices") or [] if isinstance(c, dict)]
        yield {"choices": choices, "usage": whole.get("usage")}
        return
    try:
        for sse in EventSource(response).iter_sse():
            if sse.data == "[DONE]":
                return
            if sse.data:
                yield _parse_event(sse.data)
    except SSEError as exc:   # neither JSON nor an event stream (httpx-sse checks the content type)
        raise GeneratorUnavailable(f"generator sent no event stream: {exc}", 502, "malformed") from exc


def _parse_event(data: str) -> dict:
    try:
        event = json.loads(data)
    except json.JSONDecodeError as exc:
        raise GeneratorUnavailable(f"generator sent malformed JSON in its stream: {data[:120]!r}", 502,
                                   "malformed") from exc
    if not isinstance(event, dict):
        raise GeneratorUnavailable(f"generator sent a stream event that is not an object: {data[:120]!r}", 502,
                                   "malformed")
    if "error" in event:   # vLLM and llama.cpp report mid-stream failures this way
        message = event["error"].get("message") if isinstance(event["error"], dict) else event["error"]
        raise GeneratorUnavailable(f"generator reported an error mid-stream: {message}", 502, "status")
    return event
