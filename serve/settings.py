"""Serving configuration in one typed place; every field can be set as KBQA_<NAME> in the environment."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from retrieval.search import DEFAULT_MODE, SearchMode
from retrieval.home import KbqaHome


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KBQA_")

    home: Path = Field(Path(".kbqa"), description="all state: models, collections, indexes")
    search_mode: SearchMode = DEFAULT_MODE
    # Below this cosine between question and best passage, abstain without generating.
    # Calibrated by benchs/quality/calibrate_abstention.py (tune split); see README.
    min_relevance: float = 0.38
    # The same floor for collections the multilingual encoder serves: its cosines sit higher (unrelated texts score
    # ~0.8), calibrated the same way (benchs/quality/calibrate_abstention.py --encoder multilingual: report split
    # 3.6% of answerable questions refused, 71.5% of off-topic ones, where MiniLM's 0.38 refuses 7.6% and 95.4%).
    multilingual_min_relevance: float = Field(0.84, ge=-1.0, le=1.0)
    prompt_passages: int = Field(3, ge=1, le=10, description="passages shown to the generator")
    max_new_tokens: int = Field(96, ge=8, le=1024)
    # select: the answer is the passages' sentences the selector chooses, each cited (retrieval/answering/
    # selection.py; above the 135M generator on every dev set and under 1.5 s on 2 cores, README "Answers");
    # generate: the generator writes, and the selection replaces what fails the support or degeneration check;
    # auto: generate when a remote generator is configured (a team that plugs one in wants it to write), else select.
    answer_mode: Literal["auto", "select", "generate"] = "auto"
    # Bring your own generator: any OpenAI-compatible server (vLLM, llama.cpp's server, Ollama, TGI) gets the same
    # grounded prompt; kbqa's checks apply to its text unchanged (retrieval/answering/engines/remote.py).
    generator_url: str | None = Field(None, description="base URL of an OpenAI-compatible server, e.g. "
                                      "http://gpu-box:8000/v1; unset: the embedded SmolLM2")
    generator_model: str | None = Field(None, description="the model name that server serves (required with the URL)")
    generator_api_key: SecretStr | None = Field(None, description="sent as Bearer; read from KBQA_GENERATOR_API_KEY")
    generator_timeout_s: float = Field(60.0, gt=0, le=600, description="per answer, first byte to last")
    # When the remote fails (refused, timeout, 5xx, malformed, empty): error = 502/504 to the caller; extractive =
    # the quoted selection (fallback_reason "generator unavailable"); local = the embedded generator writes it.
    generator_fallback: Literal["error", "extractive", "local"] = "extractive"
    # auto: a sentence scorer trained and made current, else the shipped one; none: no selection (generate mode
    # falls back to the old best-matching sentences); or a path.
    sentence_scorer: str = "auto"
    # Refuse when the gap detector (retrieval/answering/gap_detector.py) says the passages do not hold the answer.
    gap_detection: bool = True
    # An answer sentence needs this share of its content words in the passages it cites, else the
    # answer is replaced (see retrieval/answering/grounding.py; chosen on the tune split by benchs/quality/answer_quality.py).
    support_threshold: float = Field(0.6, ge=0.0, le=1.0)
    on_unsupported: Literal["extractive", "abstain"] = Field("extractive",
                                                              description="what replaces an unsupported answer")
    # auto: the adapter `kbqa train-generator --activate` made current, else the shipped adapter (`kbqa prepare`);
    # none: always the base model; or a path to an adapter folder.
    generator_adapter: str = "auto"
    # auto: CTranslate2 on a CPU-only machine (measured in benchs/speed/generator_speed.py), transformers on a GPU.
    generator_backend: Literal["auto", "ctranslate2", "transformers"] = "auto"
    # CTranslate2 compute precision. auto: int8 where the CPU has VNNI/AMX, float32 elsewhere (retrieval/answering/engines/cpu.py).
    generator_precision: Literal["auto", "int8", "float32"] = "auto"
    # The transformers engine's weights. auto: float32; bfloat16 keeps the answers (benchs/quality/half_precision.py) but was
    # 3x slower for the 135M generator on an H200 (benchs/results/gpu_check.md).
    generator_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Answers written together in one batch by the transformers engine. unset: 8 on a GPU, 1 on the CPU (its cores
    # are busy with one answer). With batching, unset answer_slots follows it.
    generator_batch: int | None = Field(None, ge=1, le=64, description="answers generated in one batch; unset: auto")
    # With a fine-tuned adapter: it may abstain only when the abstention's first token is this likely
    # (retrieval/answering/engines/local.py:AbstentionGate). 0.8 from a probe of 20 questions; see README.
    abstain_threshold: float = Field(0.8, ge=0.0, le=1.0)
    # Opt-in answerability gate. auto: the scorer `kbqa train-answerability --activate` made current, if any
    # (none ships: it trades answers for abstentions, README); none: off; or a path. Below the threshold
    # (best prompt passage's p(holds the answer)) kbqa abstains without generating; 0.355 was chosen on
    # held-out tune questions by benchs/quality/answerability_quality.py (<= 8% abstentions with gold in the prompt).
    answerability_scorer: str = "auto"
    answerability_threshold: float = Field(0.355, ge=0.0, le=1.0)
    # Where vectors live: faiss (files beside each collection's store; on the GPU when faiss-gpu sees one) or milvus
    # (retrieval/milvus_store.py; pip install kbqa[milvus]): milvus_uri is a server (http://host:19530) or a local
    # file for milvus-lite (one process at a time); unset: $KBQA_HOME/milvus.db.
    vector_store: Literal["faiss", "milvus"] = "faiss"
    milvus_uri: str | None = Field(None, description="Milvus server URI or milvus-lite file; unset: KBQA_HOME/milvus.db")
    milvus_token: SecretStr | None = Field(None, description="Milvus token (user:password or an API key)")
    query_batching: bool = Field(True, description="micro-batch query encoding across concurrent requests")
    query_batch_wait_ms: float = Field(0.0, ge=0.0, le=100.0,
                                       description="how long a query waits for company; 0: only those already queued")
    rate_limit_per_minute: int = Field(120, ge=0, description="requests a minute per API key; 0 turns it off")
    auth_failures_per_minute: int = Field(
        20, ge=0, description="requests with a missing or wrong key a minute per client address, then 429; 0 = off")
    # Hand-off (retrieval/answering/handoff.py): recommend a person below this answerability (1 - the gap detector's p(gap)).
    handoff_min_answerability: float = Field(0.5, ge=0.0, le=1.0)
    # When hand-off is recommended, POST the conversation here (serve/handoff_webhook.py), signed with the secret.
    handoff_webhook: str | None = Field(None, description="help-desk URL that receives recommended hand-offs")
    handoff_secret: SecretStr | None = Field(None, description="HMAC-SHA256 key signing each webhook delivery")
    # Conversations kept server-side (serve/feedback.py): a request with a conversation_id and no history continues
    # from its last turns, for this long after the last one, and no further back than this many turns.
    conversation_ttl_s: float = Field(86400.0, gt=0, description="seconds a conversation is remembered after its "
                                      "last turn")
    conversation_turns: int = Field(10, ge=1, le=10, description="question/answer turns a follow-up is read with")
    # Admission control on answers (serve/admission.py): this many computed at once (auto: 1 when the embedded
    # generator writes, it uses every core; its batch size when it batches on a GPU; 8 with a remote generator,
    # which batches; the core count when selecting),
    # up to answer_queue waiting; a request that would wait over answer_max_wait_s gets 503 + Retry-After.
    answer_slots: int | None = Field(None, ge=1, le=64, description="answers computed at once; unset: auto")
    answer_queue: int = Field(16, ge=0, le=32, description="answers waiting for a slot before 503")
    answer_max_wait_s: float = Field(2.0, gt=0, le=120, description="longest wait in the queue before 503")
    # The teacher LLM that writes each collection's synthetic customer questions (distill/teacher_questions.py):
    # any OpenAI-compatible endpoint (llama.cpp's server over a GGUF, vLLM, Ollama); offline work, never in a request.
    # auto: the endpoint below when set, else the bundled GGUF once `kbqa prepare --teacher` made it; off: never.
    teacher: Literal["auto", "off"] = "auto"
    teacher_url: str | None = Field(None, description="base URL of the teacher's OpenAI-compatible server")
    teacher_model: str | None = Field(None, description="the model name that server serves (required with the URL)")
    teacher_api_key: SecretStr | None = Field(None, description="sent as Bearer; read from KBQA_TEACHER_API_KEY")
    teacher_timeout_s: float = Field(120.0, gt=0, le=1200, description="per chunk's questions")
    # Writers of one collection take turns (retrieval/collection.py); an API upload or delete waits this long for
    # the one writing now (a CLI ingest, another upload, a promotion), then answers 503 with Retry-After.
    write_wait_s: float = Field(600.0, gt=0, le=3600, description="seconds an upload waits for another writer")
    # Per file, past which that file is the ingest report's error (ingest/limits.py): a help center never nears them.
    max_file_chars: int = Field(5_000_000, ge=1000, description="characters of text one file may hold once extracted")
    load_timeout_s: float = Field(60.0, gt=0, le=3600, description="seconds one file may take to load")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)

    @model_validator(mode="after")
    def _remote_needs_a_model(self) -> "Settings":
        if self.generator_url and not self.generator_model:
            raise ValueError("KBQA_GENERATOR_URL needs KBQA_GENERATOR_MODEL: the model name that server serves")
        if self.generator_url and not self.generator_url.startswith(("http://", "https://")):
            raise ValueError(f"KBQA_GENERATOR_URL must start with http:// or https://, got {self.generator_url!r}")
        if self.teacher_url and not self.teacher_model:
            raise ValueError("KBQA_TEACHER_URL needs KBQA_TEACHER_MODEL: the model name that server serves")
        if self.handoff_webhook and not self.handoff_secret:
            raise ValueError("KBQA_HANDOFF_WEBHOOK needs KBQA_HANDOFF_SECRET: deliveries are signed")
        if self.handoff_webhook and not self.handoff_webhook.startswith(("http://", "https://")):
            raise ValueError(f"KBQA_HANDOFF_WEBHOOK must start with http:// or https://, got {self.handoff_webhook!r}")
        return self

    @property
    def resolved_answer_mode(self) -> str:
        if self.answer_mode != "auto":
            return self.answer_mode
        return "generate" if self.generator_url else "select"

    @property
    def resolved_answer_slots(self) -> int:
        if self.answer_slots:
            return self.answer_slots
        if self.generator_url:
            return 8
        return 1 if self.resolved_answer_mode == "generate" else max(1, os.cpu_count() or 1)

    @property
    def kbqa_home(self) -> KbqaHome:
        return KbqaHome(self.home)
