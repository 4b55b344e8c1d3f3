"""The teacher LLM as a judge: do these passages hold the answer to this question? P(yes) from the first token.

Offline only (about 10 s a judgement for three 120-word passages on 2 cores): its judgements label data for the
small models that serve. The GGUF is run in-process by llama-cpp-python because the OpenAI route of its server gives
log-probabilities only with every position's logits kept (``logits_all``), which costs 1.2 GB at this context size.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

PROMPT_VERSION = "j1"
PASSAGE_WORDS = 120
QUESTION_WORDS = 120
SYSTEM = "You check whether help-center passages answer a customer's question."
ASK = "Do the passages contain the answer to the question? Reply Yes or No."


def judge_prompt(question: str, passages: list[str]) -> str:
    """Qwen2.5's chat format, written out so the whole prompt is tokenised once, special tokens included."""
    shown = "\n\n".join(f"[{i}] " + " ".join(text.split()[:PASSAGE_WORDS]) for i, text in enumerate(passages, 1))
    asked = " ".join(question.split()[:QUESTION_WORDS])
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\nPassages:\n{shown}\n\nQuestion: {asked}\n\n"
            f"{ASK}<|im_end|>\n<|im_start|>assistant\n")


class TeacherJudge:
    """``probability(question, passages)``: P(Yes) against P(No) at the reply's first token."""

    def __init__(self, gguf: Path, threads: int = 2, n_ctx: int = 2048):
        from llama_cpp import Llama

        self.llm = Llama(model_path=str(gguf), n_ctx=n_ctx, n_threads=threads, verbose=False)
        self.yes, self.no = (self.llm.tokenize(word.encode(), add_bos=False, special=False)[0] for word in ("Yes", "No"))

    def probability(self, question: str, passages: list[str]) -> float:
        tokens = self.llm.tokenize(judge_prompt(question, passages).encode(), add_bos=False, special=True)
        tokens = tokens[-(self.llm.n_ctx() - 1):]
        self.llm.reset()
        self.llm.eval(tokens)
        # Only the last position's logits exist without logits_all; llama-cpp-python does not copy them to .scores.
        logits = np.ctypeslib.as_array(self.llm._ctx.get_logits(), shape=(self.llm.n_vocab(),))
        pair = np.array([logits[self.yes], logits[self.no]], dtype=np.float64)
        pair = np.exp(pair - pair.max())
        return float(pair[0] / pair.sum())
