"""Refuse request bodies over their limit before they are read, chunked ones included.

With a Content-Length the decision is made from the header. Without one (chunked transfer) the body is counted
while it arrives and refused as soon as it passes the limit: a 200 MB chunked question is never read whole.
Uploads must send a Content-Length (411 otherwise): their limit is large, so they are not buffered here.
"""
from __future__ import annotations

import json
from typing import Callable


def kbqa_error(status: int, message: str, path: str) -> dict:
    return {"error": message, "detail": None}


async def _refuse(send, status: int, message: str, body_of: Callable[[int, str, str], dict], path: str) -> None:
    body = json.dumps(body_of(status, message, path)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    def __init__(self, app, limit_of: Callable[[str, str], tuple[int, bool]],
                 error_body: Callable[[int, str, str], dict] = kbqa_error):
        """``limit_of(method, path) -> (limit in bytes, is an upload)``; ``error_body(status, message, path)``: the
        refusal's JSON, in the shape that path's clients read (OpenAI's on the OpenAI-compatible routes)."""
        self.app = app
        self.limit_of = limit_of
        self.error_body = error_body

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, is_upload = self.limit_of(scope["method"], scope["path"])
        path = scope["path"]
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > limit:
                return await _refuse(send, 413, f"request body larger than {limit} bytes", self.error_body, path)
            return await self.app(scope, receive, send)
        if is_upload:
            return await _refuse(send, 411, "uploads need a Content-Length header", self.error_body, path)
        # Chunked (or no body): read it here, counting, and hand the app the same messages.
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                return await _refuse(send, 413, f"request body larger than {limit} bytes", self.error_body, path)
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)
