"""Prometheus metrics: one registry per app (tests build many apps), filled by a middleware and the ask route."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32)


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("kbqa_requests_total", "HTTP requests", ["route", "method", "status"],
                                registry=self.registry)
        self.latency = Histogram("kbqa_request_seconds", "HTTP request latency", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.retrieval = Histogram("kbqa_retrieval_seconds", "retrieval time per question",
                                   buckets=LATENCY_BUCKETS, registry=self.registry)
        self.generation = Histogram("kbqa_generation_seconds", "generation time per answer",
                                    buckets=LATENCY_BUCKETS, registry=self.registry)
        self.selection = Histogram("kbqa_selection_seconds", "sentence scoring and selection time per answer",
                                   buckets=LATENCY_BUCKETS, registry=self.registry)
        self.answers = Counter("kbqa_answers_total", "answers by grounding", ["grounding"], registry=self.registry)
        # Generated answers replaced by the quoted selection, by why (unsupported, loop, truncated, ...).
        self.fallbacks = Counter("kbqa_answer_fallbacks_total", "generated answers not served, by reason", ["reason"],
                                 registry=self.registry)
        # A remote generator (KBQA_GENERATOR_URL): each call's time and outcome; up = the last call succeeded.
        self.remote_seconds = Histogram("kbqa_remote_generator_seconds", "remote generator call time (whole answer)",
                                        buckets=LATENCY_BUCKETS, registry=self.registry)
        self.remote_failures = Counter("kbqa_remote_generator_failures_total", "remote generator failures by kind",
                                       ["kind"], registry=self.registry)
        self.remote_up = Gauge("kbqa_remote_generator_up", "1 if the last remote generator call succeeded",
                               registry=self.registry)
        self.rejected_answers = Counter("kbqa_answers_rejected_total", "answers refused with 503: every slot busy, "
                                        "queue full or too slow (serve/admission.py)", registry=self.registry)
        self.answer_slots = Gauge("kbqa_answer_slots", "answers being computed (state=active) or waiting for a slot",
                                  ["state"], registry=self.registry)
        self.index_vectors = Gauge("kbqa_index_vectors", "vectors in a collection's index", ["collection"],
                                   registry=self.registry)

    def observe_remote(self, seconds: float, error) -> None:
        self.remote_seconds.observe(seconds)
        self.remote_up.set(0 if error is not None else 1)
        if error is not None:
            self.remote_failures.labels(error.kind).inc()

    def observe_answer(self, answer) -> None:
        timings = answer.timings_ms
        if "retrieve" in timings:
            self.retrieval.observe(timings["retrieve"] / 1000)
        if "generate" in timings:
            self.generation.observe(timings["generate"] / 1000)
        if "select" in timings:
            self.selection.observe(timings["select"] / 1000)
        self.answers.labels(answer.grounding).inc()
        if answer.fallback_reason:
            self.fallbacks.labels(answer.fallback_reason).inc()
