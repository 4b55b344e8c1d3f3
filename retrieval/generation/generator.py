"""The generator: question + numbered passages -> a short answer citing them as [n]."""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

from retrieval.models import verify

ABSTENTION = "I don't know based on the documentation."
SYSTEM_PROMPT = (
    "You are a customer support assistant. Answer the question using only the numbered passages. "
    "Cite the passage you used like [1]. Keep the answer short. If the passages do not answer the "
    f"question, reply exactly: {ABSTENTION}"
)
_ABSTAIN_PATTERN = re.compile(r"\b(i don't know|i do not know|i'm not sure|cannot answer|can't answer)\b", re.I)
REPETITION_PENALTY = 1.1  # on the answer's own tokens only; both engines
_CITATION = re.compile(r"\[(\d{1,2})\]")


@dataclass
class Passage:
    title: str
    text: str


def build_messages(question: str, passages: list[Passage]) -> list[dict]:
    numbered = "\n\n".join(f"[{n}] {p.title}\n{p.text}" for n, p in enumerate(passages, start=1))
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Passages:\n{numbered}\n\nQuestion: {question}"},
    ]


def says_abstain(answer: str) -> bool:
    return bool(_ABSTAIN_PATTERN.search(answer))


def cited_numbers(answer: str, n_passages: int) -> tuple[str, list[int]]:
    """Keep citations [n] with 1 <= n <= n_passages (first-seen order); strip any other [n] from the text."""
    kept: list[int] = []

    def keep_or_drop(match: re.Match) -> str:
        n = int(match.group(1))
        if 1 <= n <= n_passages:
            if n not in kept:
                kept.append(n)
            return match.group(0)
        return ""

    cleaned = _CITATION.sub(keep_or_drop, answer)
    cleaned = re.sub(r"[ \t]+([.,;:!?])", r"\1", re.sub(r"[ \t]{2,}", " ", cleaned)).strip()
    return cleaned, kept


class AbstentionGate:
    """A logits processor: at the first new token, forbid the abstention's opening token unless its
    probability reaches ``threshold`` (so the model abstains only when it is that sure)."""

    def __init__(self, token_id: int, threshold: float, prompt_len: int):
        self.token_id, self.threshold, self.prompt_len = token_id, threshold, prompt_len

    def __call__(self, input_ids, scores):
        import torch

        if input_ids.shape[1] == self.prompt_len:
            unsure = torch.softmax(scores, dim=-1)[:, self.token_id] < self.threshold
            scores[unsure, self.token_id] = float("-inf")
        return scores


class Generator:
    """SmolLM2 from a prepared checkpoint folder, optionally with a fine-tuned LoRA adapter merged in; greedy."""

    def __init__(self, model_dir: Path, device: str | None = None, max_new_tokens: int = 96,
                 adapter_dir: Path | None = None, abstain_threshold: float | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_dir = Path(model_dir)
        verify(model_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.name = model_dir.name
        if adapter_dir is not None:
            from peft import PeftModel

            verify(Path(adapter_dir))
            # Merged once at load: serving then costs exactly what the base model costs.
            model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
            self.name = f"{model_dir.name}+{Path(adapter_dir).name}"
        self.model = model.to(self.device).eval()
        self.max_new_tokens = max_new_tokens
        # The fine-tuned model puts much probability on opening with the abstention sentence: greedy
        # decoding then abstains too often. It may abstain only when that first token is this likely.
        self.abstain_threshold = abstain_threshold
        self.abstain_token = self.tokenizer.encode(ABSTENTION, add_special_tokens=False)[0]
        self._lock = threading.Lock()  # one generation at a time: the CPU has no spare cores for two

    def stream(self, messages: list[dict], stats: dict | None = None):
        """Yields decoded text pieces as they are generated; fills stats with token counts at the end."""
        import torch
        from transformers import TextIteratorStreamer

        inputs = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                    return_tensors="pt", return_dict=True).to(self.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

        prompt_len = inputs["input_ids"].shape[1]
        # Penalise only the answer's own repeats: a penalty over the prompt pushes the model away from the
        # very passage words it should quote (CTranslate2 penalises generated tokens only, too).
        processors = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(REPETITION_PENALTY, prompt_len)])
        if self.abstain_threshold is not None:
            processors.append(AbstentionGate(self.abstain_token, self.abstain_threshold, prompt_len))
        result: dict = {}

        def run() -> None:
            try:
                with torch.inference_mode():
                    result["output"] = self.model.generate(
                        **inputs, max_new_tokens=self.max_new_tokens, do_sample=False, logits_processor=processors,
                        pad_token_id=self.tokenizer.eos_token_id, streamer=streamer)
            except BaseException as exc:  # re-raised in the caller's thread once the stream ends
                result["error"] = exc
                streamer.end()

        with self._lock:
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            yield from streamer
            worker.join()
        if "error" in result:
            raise result["error"]
        if stats is not None:
            stats["prompt_tokens"] = prompt_len
            stats["new_tokens"] = int(result["output"].shape[1] - prompt_len)

    def generate(self, messages: list[dict]) -> tuple[str, int, int]:
        """(text, prompt tokens, new tokens)."""
        stats: dict = {}
        text = "".join(self.stream(messages, stats)).strip()
        return text, stats["prompt_tokens"], stats["new_tokens"]
