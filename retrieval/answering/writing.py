"""The writing stage: the generator engine writes over the prompt passages, streaming; when a remote engine fails, the
fallback decides what answers instead (an error, the quoted selection, or the embedded engine)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Generator as Gen

from retrieval.answering.engines.base import GeneratorEngine
from retrieval.answering.engines.remote import GeneratorUnavailable

# What answers when a remote generator fails: an error (502/504), the quoted selection, or the embedded generator.
GENERATOR_FALLBACKS = ("error", "extractive", "local")
GENERATOR_UNAVAILABLE = "generator unavailable"


@dataclass(frozen=True)
class Draft:
    raw: str                     # the text as written ("" when the selection is to be quoted instead)
    prompt_tokens: int | None    # as the engine reports them (a remote server may not)
    new_tokens: int | None
    hit_token_budget: bool       # cut by max_new_tokens: the degeneration guard's "half sentence" signal
    fell_back: bool = False      # the remote failed and the fallback answered
    quote_instead: bool = False  # the remote failed and the fallback is the quoted selection


class Writer:
    def __init__(self, generator: GeneratorEngine, fallback: str = "error",
                 fallback_generator: GeneratorEngine | None = None):
        """``fallback`` applies when ``generator`` raises GeneratorUnavailable (a remote one; the embedded engines
        never do); ``fallback_generator``: the embedded engine, for ``fallback="local"``."""
        if generator is None:
            raise ValueError("answer mode 'generate' needs a generator")
        if fallback not in GENERATOR_FALLBACKS:
            raise ValueError(f"generator fallback must be one of {GENERATOR_FALLBACKS}, got {fallback!r}")
        if fallback == "local" and fallback_generator is None:
            raise ValueError("generator fallback 'local' needs the embedded generator loaded")
        self.generator, self.fallback, self.fallback_generator = generator, fallback, fallback_generator

    def stream(self, messages: list[dict]) -> Gen[tuple[str, str], None, Draft]:
        """Yields ("token", piece) as the text is written; returns the Draft (``draft = yield from writer.stream(m)``).
        The pieces streamed before a fallback were the remote's: the final answer is what to show."""
        try:
            return (yield from self._write(self.generator, messages))
        except GeneratorUnavailable:
            if self.fallback == "error":
                raise
            if self.fallback == "extractive":
                return Draft("", None, None, False, fell_back=True, quote_instead=True)
        draft = yield from self._write(self.fallback_generator, messages)
        return Draft(draft.raw, draft.prompt_tokens, draft.new_tokens, draft.hit_token_budget, fell_back=True)

    @staticmethod
    def _write(engine: GeneratorEngine, messages: list[dict]) -> Gen[tuple[str, str], None, Draft]:
        pieces: list[str] = []
        stats: dict = {}
        for piece in engine.stream(messages, stats):
            pieces.append(piece)
            yield "token", piece
        max_new = getattr(engine, "max_new_tokens", None)
        hit_budget = stats.get("truncated", bool(max_new) and stats.get("new_tokens", 0) >= max_new)
        return Draft("".join(pieces).strip(), stats.get("prompt_tokens"), stats.get("new_tokens"), hit_budget)
