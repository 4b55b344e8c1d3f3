"""POST each recommended hand-off to the help desk (KBQA_HANDOFF_WEBHOOK), signed, retried, never in the way.

A bounded queue and one worker thread: ``submit`` never blocks and never raises, so a slow or failing webhook
cannot delay or break an answer; when the queue is full the hand-off is dropped and counted. Each delivery is
signed with HMAC-SHA256 over ``"<timestamp>.<body>"`` (``X-Kbqa-Timestamp``, ``X-Kbqa-Signature: sha256=<hex>``)
so the receiver can check it came from kbqa and is fresh (``verify_signature``). Network errors, timeouts, 408, 429
and 5xx are retried with exponential backoff; any other 4xx is the receiver refusing it, not retried.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
import uuid
from collections import Counter

import httpx
import tenacity

log = logging.getLogger("kbqa.handoff")
_STOP = object()


class _Retryable(Exception):
    """A network error, a timeout, 408, 429 or 5xx: worth another attempt."""


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(secret: str, timestamp: str, body: bytes, signature: str, max_age_s: float = 300) -> bool:
    """For receivers: the signature matches and the timestamp is at most ``max_age_s`` old."""
    try:
        fresh = abs(time.time() - float(timestamp)) <= max_age_s
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


class HandoffWebhook:
    def __init__(self, url: str, secret: str, max_queue: int = 1000, attempts: int = 4, backoff_s: float = 0.5,
                 timeout_s: float = 5.0):
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"hand-off webhook must start with http:// or https://, got {url!r}")
        if not secret:
            raise ValueError("a hand-off webhook needs a signing secret (KBQA_HANDOFF_SECRET)")
        self.url, self._secret = url, secret
        self.attempts, self.backoff_s = attempts, backoff_s
        self.client = httpx.Client(timeout=timeout_s)
        self.queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.counts: Counter = Counter()   # delivered | failed | dropped | retried
        self._worker = threading.Thread(target=self._run, name="kbqa-handoff-webhook", daemon=True)
        self._worker.start()

    def submit(self, payload: dict) -> bool:
        """Queue one hand-off; False (and counted) when the queue is full. Never blocks."""
        payload = {"delivery_id": uuid.uuid4().hex, "event": "handoff", "created": time.time(), **payload}
        try:
            self.queue.put_nowait(payload)
            return True
        except queue.Full:
            self.counts["dropped"] += 1
            log.warning("hand-off webhook queue full (%d): hand-off dropped", self.queue.maxsize)
            return False

    def _run(self) -> None:
        while True:
            payload = self.queue.get()
            if payload is _STOP:
                self.queue.task_done()
                return
            try:
                self._deliver(payload)
            except Exception:   # the worker must outlive any one delivery
                self.counts["failed"] += 1
                log.exception("hand-off webhook delivery crashed")
            finally:
                self.queue.task_done()

    def _deliver(self, payload: dict) -> None:
        body = json.dumps(payload).encode()
        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=tenacity.wait_exponential(multiplier=self.backoff_s, max=60),
            retry=tenacity.retry_if_exception_type(_Retryable), before_sleep=lambda _: self.counts.update(["retried"]),
            reraise=True)
        try:
            status = retrying(self._post, body, payload["delivery_id"])
        except _Retryable as exc:
            self.counts["failed"] += 1
            log.warning("hand-off webhook gave up on delivery %s after %d attempts (%s)", payload["delivery_id"],
                        self.attempts, exc)
            return
        if status < 300:
            self.counts["delivered"] += 1
        else:   # a 4xx other than 408 and 429: the receiver refuses it, and would again
            self.counts["failed"] += 1
            log.warning("hand-off webhook refused delivery %s: HTTP %d", payload["delivery_id"], status)

    def _post(self, body: bytes, delivery_id: str) -> int:
        """One signed POST (signed now: the timestamp is fresh on every attempt); the status, or _Retryable."""
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Kbqa-Timestamp": timestamp,
                   "X-Kbqa-Signature": sign(self._secret, timestamp, body), "X-Kbqa-Delivery": delivery_id}
        try:
            response = self.client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise _Retryable(type(exc).__name__) from exc
        if response.status_code >= 500 or response.status_code in (408, 429):
            raise _Retryable(f"HTTP {response.status_code}")
        return response.status_code

    def drain(self, timeout_s: float = 10.0) -> bool:
        """Wait until the queue is empty and the last delivery finished (tests, shutdown); True if it did."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.queue.unfinished_tasks == 0:
                return True
            time.sleep(0.02)
        return False

    def close(self, timeout_s: float = 5.0) -> None:
        try:
            self.queue.put(_STOP, timeout=timeout_s)
        except queue.Full:
            pass
        self._worker.join(timeout_s)
        self.client.close()
