"""Refuse request bodies over their limit before they are read, chunked ones included.

With a Content-Length the decision is made from the header. Without one (chunked transfer) the body is counted
while it arrives and refused as soon as it passes the limit: a 200 MB chunked question is never read whole.
Uploads must send a Content-Length (411 otherwise): their limit is large, so they are not buffered here.
"""
from __future__ import annotations

import json
from typing import Callable


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message, "detail": None}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    def __init__(self, app, limit_of: Callable[[str, str], tuple[int, bool]]):
        """``limit_of(method, path) -> (limit in bytes, is an upload)``."""
        self.app = app
        self.limit_of = limit_of

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit, is_upload = self.limit_of(scope["method"], scope["path"])
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > limit:
                return await _refuse(send, 413, f"request body larger than {limit} bytes")
            return await self.app(scope, receive, send)
        if is_upload:
            return await _refuse(send, 411, "uploads need a Content-Length header")
        # Chunked (or no body): read it here, counting, and hand the app the same messages.
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > limit:
                return await _refuse(send, 413, f"request body larger than {limit} bytes")
            if not message.get("more_body", False):
                break

        async def replay():
            return messages.pop(0) if messages else await receive()

        return await self.app(scope, replay, send)
