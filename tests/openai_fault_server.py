"""A small OpenAI-compatible chat server on a loopback port that answers, or misbehaves, on purpose.

The fault cases of the remote generator (retrieval/answering/engines/remote.py) run against a real socket: a refused
connection, a stall past the timeout, a 500, malformed JSON, a broken stream, an empty answer, an error mid-stream.
``server.behaviour`` picks what the next request gets; ``server.requests`` keeps what it was sent.
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BEHAVIOURS = ("ok", "json", "stall", "status500", "malformed_json", "broken_stream", "empty", "error_event",
              "drop_mid_stream")


def _chunk(text: str | None = None, finish: str | None = None, usage: dict | None = None) -> bytes:
    event = {"id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 0, "model": "scripted",
             "choices": [] if usage else [{"index": 0, "delta": {"content": text} if text else {},
                                            "finish_reason": finish}]}
    if usage:
        event["usage"] = usage
    return f"data: {json.dumps(event)}\n\n".encode()


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):   # a client that gave up on a stall is the point, not news
        pass


class FaultServer:
    def __init__(self, answer: str = "Refunds are paid within five days [1].", stall_s: float = 3.0):
        self.answer, self.stall_s = answer, stall_s
        self.behaviour = "ok"
        self.requests: list[dict] = []   # {"path", "headers", "body"}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"   # one request per connection: a closed socket ends every body

            def log_message(self, *args):   # quiet tests
                pass

            def do_GET(self):
                if not self.path.endswith("/models"):
                    return self._send(404, b'{"error": "no such path"}')
                self._send(200, json.dumps({"object": "list", "data": [{"id": "scripted", "object": "model"}]})
                           .encode())

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                getattr(self, f"_{server.behaviour}")()

            def _send(self, status: int, payload: bytes, content_type: str = "application/json"):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _start_stream(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.end_headers()

            def _ok(self):
                self._start_stream()
                for word in server.answer.split(" "):
                    self.wfile.write(_chunk(word + " "))
                self.wfile.write(_chunk(finish="stop"))
                self.wfile.write(_chunk(usage={"prompt_tokens": 321, "completion_tokens": 12, "total_tokens": 333}))
                self.wfile.write(b"data: [DONE]\n\n")

            def _json(self):   # a server that ignores stream=true
                self._send(200, json.dumps({"object": "chat.completion", "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": server.answer},
                     "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, "completion_tokens": 7}}).encode())

            def _stall(self):
                time.sleep(server.stall_s)
                self._ok()

            def _status500(self):
                self._send(500, b'{"error": {"message": "CUDA out of memory"}}')

            def _malformed_json(self):
                self._start_stream()
                self.wfile.write(b"data: {not json\n\n")

            def _broken_stream(self):
                self._start_stream()
                self.wfile.write(b'data: {"choices": "not a list of objects"}\n\n')

            def _empty(self):
                self._start_stream()
                self.wfile.write(_chunk(finish="stop"))
                self.wfile.write(b"data: [DONE]\n\n")

            def _error_event(self):
                self._start_stream()
                self.wfile.write(_chunk("Refunds "))
                self.wfile.write(b'data: {"error": {"message": "the engine crashed"}}\n\n')

            def _drop_mid_stream(self):
                # Promise a longer body than is sent, then close: the client sees the connection die mid-answer.
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.wfile.write(_chunk("Refunds "))
                self.wfile.flush()

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FaultServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
