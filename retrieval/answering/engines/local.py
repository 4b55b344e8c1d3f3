"""The embedded generator on transformers: SmolLM2 (+ a LoRA adapter, merged), greedy, batched on a GPU."""
from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path

from retrieval.answering.engines.base import REPETITION_PENALTY, GeneratorEngine
from retrieval.answering.prompt import ABSTENTION
from retrieval.model_store import verify

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


DTYPES = ("auto", "float32", "bfloat16", "float16")


def resolve_dtype(requested: str, device: str) -> str:
    """auto: float32, on a GPU too. Measured on an H200 (benchs/results/gpu_check.md): the 135M generator writes one
    token at a time, bound by kernel launches, not arithmetic, and bfloat16 only adds casts (transformers' own
    generate: 38 tokens/s in float32, 13 in bfloat16). Its answers hold in bfloat16 (benchs/quality/half_precision.py:
    token-F1 -0.002 [-0.023, +0.017]), so a larger local model may want it: KBQA_GENERATOR_DTYPE."""
    if requested not in DTYPES:
        raise ValueError(f"generator dtype must be one of {DTYPES}, got {requested!r}")
    return "float32" if requested == "auto" else requested


@dataclass
class _Request:
    """One answer inside a batch: its prompt, and the queue its text pieces go to."""
    messages: list[dict]
    pieces: "queue.Queue" = field(default_factory=lambda: queue.Queue())


class _BatchStreamer:
    """Receives generate()'s tokens for the whole batch (transformers' streamer protocol) and hands each row's new
    text to its request as soon as it decodes cleanly (no half UTF-8 character)."""

    def __init__(self, tokenizer, requests: list[_Request], eos_ids: set[int]):
        self.tokenizer, self.requests, self.eos_ids = tokenizer, requests, eos_ids
        self.tokens: list[list[int]] = [[] for _ in requests]
        self.sent = [""] * len(requests)
        self.finished = [False] * len(requests)
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:   # the first call carries the prompts
            self._prompt_seen = True
            return
        for row, token in enumerate(value.reshape(len(self.requests), -1)[:, -1].tolist()):
            if self.finished[row]:
                continue   # a finished row is padded until the whole batch ends
            self.tokens[row].append(token)
            if token in self.eos_ids:
                self.finished[row] = True
            self._flush(row)

    def _flush(self, row: int, last: bool = False) -> None:
        text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)
        if (text.endswith("\ufffd") and not last) or not text.startswith(self.sent[row]):
            return
        piece, self.sent[row] = text[len(self.sent[row]):], text
        if piece:
            self.requests[row].pieces.put(("text", piece))

    def end(self) -> None:
        for row in range(len(self.requests)):
            self._flush(row, last=True)


class Generator(GeneratorEngine):
    """SmolLM2 from a prepared checkpoint folder, optionally with a fine-tuned LoRA adapter merged in; greedy.

    ``max_batch`` > 1 (the default on a GPU): answers asked at the same time share one ``generate`` call, left-padded
    into a batch of up to ``max_batch`` (static batches: a request that arrives mid-batch starts with the next one).
    On a CPU the cores are already busy with one answer, so answers take turns (``max_batch`` 1)."""

    def __init__(self, model_dir: Path, device: str | None = None, max_new_tokens: int = 96,
                 adapter_dir: Path | None = None, abstain_threshold: float | None = None, dtype: str = "auto",
                 max_batch: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model_dir = Path(model_dir)
        verify(model_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = resolve_dtype(dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.tokenizer.padding_side = "left"   # generation continues every row from its end
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.name = model_dir.name
        if adapter_dir is not None:
            from peft import PeftModel

            verify(Path(adapter_dir))
            # Merged once at load (in float32, then cast): serving then costs exactly what the base model costs.
            model = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
            self.name = f"{model_dir.name}+{Path(adapter_dir).name}"
        self.model = model.to(self.device, dtype=getattr(torch, self.dtype)).eval()
        self.max_new_tokens = max_new_tokens
        # The fine-tuned model puts much probability on opening with the abstention sentence: greedy
        # decoding then abstains too often. It may abstain only when that first token is this likely.
        self.abstain_threshold = abstain_threshold
        self.abstain_token = self.tokenizer.encode(ABSTENTION, add_special_tokens=False)[0]
        eos = self.model.generation_config.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos if eos is not None else self.tokenizer.eos_token_id])
        self.max_batch = max_batch or (8 if self.device.startswith("cuda") else 1)
        self._waiting: list[_Request] = []
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()   # guards _waiting and _worker

    def stream(self, messages: list[dict], stats: dict | None = None):
        """Yields decoded text pieces as they are generated; fills stats with token counts at the end."""
        request = _Request(messages)
        with self._worker_lock:
            self._waiting.append(request)
            if self._worker is None:   # one worker runs batches while anything waits, then ends
                self._worker = threading.Thread(target=self._run_while_waiting, daemon=True)
                self._worker.start()
        while True:
            kind, value = request.pieces.get()
            if kind == "text":
                yield value
            elif kind == "error":
                raise value
            else:
                if stats is not None:
                    stats.update(value)
                return

    def _run_while_waiting(self) -> None:
        while True:
            with self._worker_lock:
                batch, self._waiting = self._waiting[:self.max_batch], self._waiting[self.max_batch:]
                if not batch:
                    self._worker = None
                    return
            self._run_batch(batch)

    def _run_batch(self, batch: list[_Request]) -> None:
        import torch
        from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

        try:
            inputs = self.tokenizer.apply_chat_template(
                [r.messages for r in batch], add_generation_prompt=True, padding=True, return_tensors="pt",
                return_dict=True).to(self.device)
            prompt_len = inputs["input_ids"].shape[1]   # padded: the same for every row
            # Penalise only the answer's own repeats: a penalty over the prompt pushes the model away from the
            # very passage words it should quote (CTranslate2 penalises generated tokens only, too).
            processors = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(REPETITION_PENALTY, prompt_len)])
            if self.abstain_threshold is not None:
                processors.append(AbstentionGate(self.abstain_token, self.abstain_threshold, prompt_len))
            streamer = _BatchStreamer(self.tokenizer, batch, self._eos_ids)
            with torch.inference_mode():
                self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False,
                                    logits_processor=processors, pad_token_id=self.tokenizer.pad_token_id,
                                    streamer=streamer)
        except BaseException as exc:   # every request of the batch hears of it, in its own thread
            for request in batch:
                request.pieces.put(("error", exc))
            return
        for row, request in enumerate(batch):
            request.pieces.put(("done", {"prompt_tokens": int(inputs["attention_mask"][row].sum()),
                                         "new_tokens": len(streamer.tokens[row])}))
