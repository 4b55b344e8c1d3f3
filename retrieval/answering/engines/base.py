"""The one interface every generator engine implements, so the pipeline never asks which engine it holds."""
from __future__ import annotations

from typing import Iterator, Protocol, runtime_checkable

# On the answer's own tokens only, in every embedded engine: a penalty over the prompt pushes the model away from the
# very passage words it should quote.
REPETITION_PENALTY = 1.1


class EngineNotStarted(RuntimeError):
    """An engine started on demand (serve/wiring.teacher_llm) could not be started at all."""


@runtime_checkable
class GeneratorEngine(Protocol):
    """Writes an answer to grounded chat messages (retrieval/answering/prompt.py:build_messages), greedily.

    ``stream`` yields text pieces as they are written and, at the end, fills ``stats`` with what the engine knows:
    ``prompt_tokens``, ``new_tokens`` and, where the engine says so itself, ``truncated`` (cut by the token budget).
    A remote engine raises ``remote.GeneratorUnavailable`` when it cannot answer; the embedded ones never do."""

    name: str
    max_new_tokens: int

    def stream(self, messages: list[dict], stats: dict | None = None) -> Iterator[str]: ...

    def generate(self, messages: list[dict]) -> tuple[str, int, int]:
        """(text, prompt tokens, new tokens): the whole answer at once (benchmarks, training checks)."""
        stats: dict = {}
        text = "".join(self.stream(messages, stats)).strip()
        return text, stats.get("prompt_tokens", 0), stats.get("new_tokens", 0)
