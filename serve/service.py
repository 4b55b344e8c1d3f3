"""The running system: loaded models plus open collections, shared by the CLI and the API."""
from __future__ import annotations

import functools
import os
import shutil
import threading
import time

from ingest.chunker import Chunker
from retrieval.batching import BatchingEncoder
from ingest.pipeline import IngestReport
from retrieval.collection import Collection
from retrieval.search import SearchHit
from retrieval.encoder import SentenceEncoder, TextEncoder, pick_device
from retrieval.home import check_collection_name
from retrieval.index_generations import IndexGenerations
from retrieval.generation.abstention import GapDetector
from retrieval.generation.registry import resolve_adapter, resolve_scorer, resolve_sentence_scorer
from retrieval.generation.selection import SentenceSelector
from retrieval.models import FIX_HINT, GENERATOR_BASE, STUDENT_START, ModelNotReady, model_path
from serve.answer import Answer, Answerer
from serve.documents import DocumentManager
from serve.feedback import FeedbackStore
from serve.followup import standalone_question
from serve.handoff import HandoffPolicy
from serve.handoff_webhook import HandoffWebhook
from serve.jobs import DistillJobs, distill_runner
from serve.settings import Settings


class CollectionExists(RuntimeError):
    """A collection of that name is already there."""


class KbqaService:
    def __init__(self, settings: Settings, encoder: TextEncoder, generator=None, encoder_loader=SentenceEncoder,
                 answerability=None, distill_runner=distill_runner, selector=None, sentence_scorer=None,
                 gap_detector=None, fallback_generator=None):
        """``generator`` and/or (``selector``, ``sentence_scorer``) make it answer; without a selector it answers
        with the generator whatever ``settings.answer_mode`` says (tests, embedded uses with a custom generator).
        ``fallback_generator``: the embedded one, when a remote generator may fall back to it."""
        self.settings = settings
        self.home = settings.kbqa_home
        self.encoder = encoder  # default for collections without a distilled encoder of their own
        self.encoder_loader = encoder_loader
        self.chunker = Chunker(encoder.count_tokens)
        can_select = selector is not None and sentence_scorer is not None
        mode = settings.resolved_answer_mode if can_select else "generate"
        # The fallback applies to a remote generator; an embedded one never raises GeneratorUnavailable.
        fallback = settings.generator_fallback
        if fallback == "local" and fallback_generator is None:
            fallback = "extractive"   # no embedded generator was handed in (tests, embedded uses): quote instead
        self.answerer = (Answerer(generator, settings.min_relevance, settings.prompt_passages,
                                  settings.support_threshold, settings.on_unsupported,
                                  answerability, settings.answerability_threshold, mode=mode,
                                  selector=selector if can_select else None,
                                  sentence_scorer=sentence_scorer if can_select else None,
                                  gap_detector=gap_detector if can_select else None,
                                  fallback=fallback, fallback_generator=fallback_generator)
                         if generator is not None or can_select else None)
        self.vector_store, self._milvus = IndexGenerations, None
        if settings.vector_store == "milvus":   # one client for every collection (retrieval/milvus_store.py)
            from retrieval.milvus_store import MilvusGenerations, connect

            token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
            self._milvus = connect(settings.milvus_uri or str(self.home.root / "milvus.db"), token)
            self.vector_store = functools.partial(MilvusGenerations, client=self._milvus)
        self._collections: dict[str, Collection] = {}
        self._lock = threading.Lock()
        self.feedback = FeedbackStore(self.home.root / "feedback.sqlite")
        self.handoff = HandoffPolicy(settings.handoff_min_answerability)
        secret = settings.handoff_secret
        self.handoff_webhook = HandoffWebhook(settings.handoff_webhook, secret.get_secret_value()) \
            if settings.handoff_webhook and secret else None
        self.documents = DocumentManager(self.chunker)
        self.jobs = DistillJobs(distill_runner(self))   # (collection, on_stage) -> report

    @classmethod
    def load(cls, settings: Settings, with_generator: bool = True) -> "KbqaService":
        """Load the serving encoder (and generator) from prepared model folders."""
        # Served queries are micro-batched across concurrent requests (retrieval/batching.py).
        wrap = (lambda encoder: BatchingEncoder(encoder, max_wait_ms=settings.query_batch_wait_ms)) \
            if settings.query_batching else (lambda encoder: encoder)
        encoder = wrap(SentenceEncoder(model_path(settings.kbqa_home.models_dir, STUDENT_START)))
        generator = answerability = selector = sentence_scorer = gap_detector = fallback_generator = None
        mode = settings.resolved_answer_mode
        if with_generator:   # the answering parts: selector and scorer; the generator only in generate mode
            from retrieval.generation.answerability import AnswerabilityScorer

            device = pick_device()   # every model on the chosen device: the scorers too (issue 16)
            models_dir = settings.kbqa_home.models_dir
            minilm = model_path(models_dir, STUDENT_START)
            scorer_dir = resolve_sentence_scorer(settings.sentence_scorer, models_dir)
            if scorer_dir is None and mode == "select":
                raise ModelNotReady(f"answer mode 'select' needs the sentence scorer: {FIX_HINT}")
            if scorer_dir is not None:
                sentence_scorer = AnswerabilityScorer.load(scorer_dir, minilm, device=device)
                selector = SentenceSelector.load()
                gap_detector = GapDetector.load() if settings.gap_detection else None
            if mode == "generate" and settings.generator_url:
                from retrieval.generation.remote import RemoteGenerator

                key = settings.generator_api_key
                generator = RemoteGenerator(settings.generator_url, settings.generator_model,
                                            key.get_secret_value() if key else None, settings.generator_timeout_s,
                                            settings.max_new_tokens)
            if mode == "generate" and (not settings.generator_url or settings.generator_fallback == "local"):
                from retrieval.generation.backend import load_generator

                adapter = resolve_adapter(settings.generator_adapter, models_dir)
                local = load_generator(models_dir, model_path(models_dir, GENERATOR_BASE),
                                       settings.generator_backend, adapter_dir=adapter,
                                       max_new_tokens=settings.max_new_tokens,
                                       abstain_threshold=settings.abstain_threshold if adapter else None,
                                       precision=settings.generator_precision, dtype=settings.generator_dtype,
                                       max_batch=settings.generator_batch)
                if generator is None:
                    generator = local
                else:
                    fallback_generator = local
            scorer = resolve_scorer(settings.answerability_scorer, models_dir)
            if scorer is not None:
                answerability = AnswerabilityScorer.load(scorer, minilm, device=device)
        return cls(settings, encoder, generator, encoder_loader=lambda folder: wrap(SentenceEncoder(folder)),
                   answerability=answerability, selector=selector, sentence_scorer=sentence_scorer,
                   gap_detector=gap_detector, fallback_generator=fallback_generator)

    def collection(self, name: str, create: bool = False) -> Collection:
        check_collection_name(name)
        with self._lock:
            if name not in self._collections:
                self._collections[name] = Collection(self.home.collection_dir(name), self.encoder, create=create,
                                                     encoder_loader=self.encoder_loader,
                                                     vector_store=self.vector_store)
            return self._collections[name]

    def collection_names(self) -> list[str]:
        return self.home.collections()

    def create_collection(self, name: str) -> Collection:
        if name in self.collection_names():
            raise CollectionExists(f"collection {name!r} already exists")
        collection = self.collection(name, create=True)
        collection.refresh()  # writes the store, so the collection is listed from now on
        return collection

    def delete_collection(self, name: str) -> None:
        """Remove a collection and everything in it (store, indexes, distilled encoders)."""
        collection = self.collection(name)  # UnknownCollection if there is none
        with self._lock:
            self._collections.pop(name, None)
            collection.generations.drop()   # vectors kept elsewhere (Milvus) go first: the folder names them
            collection.close()
            # Rename first: a crash mid-delete leaves a hidden folder, never a half collection.
            doomed = collection.directory.with_name(f".deleted-{name}-{os.getpid()}")
            collection.directory.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def ingest(self, path, collection: str = "default", show_progress: bool = False) -> IngestReport:
        """Ingest into ``collection``, creating it; a new collection that ends up holding nothing (the path is
        missing, every file failed) is removed again, so a failed ingest never leaves an empty one listed."""
        is_new = collection not in self.collection_names()
        try:
            report = self.collection(collection, create=True).ingest(path, self.chunker, show_progress=show_progress)
        except BaseException:
            if is_new:
                self.delete_collection(collection)
            raise
        if is_new and report.chunks_total == 0:
            self.delete_collection(collection)
        return report

    def search(self, query: str, k: int = 5, collection: str = "default") -> list[SearchHit]:
        return self.collection(collection).search(query, k, self.settings.search_mode)

    def ask(self, question: str, k: int = 5, collection: str = "default", history: list[dict] | None = None,
            conversation_id: str | None = None) -> Answer:
        if self.answerer is None:
            raise RuntimeError("this service was loaded without its answering models")
        start = time.perf_counter()
        standalone = standalone_question(question, history or [])
        hits = self.search(standalone, k, collection)
        retrieve_ms = round((time.perf_counter() - start) * 1000, 1)
        answer = self.answerer.answer(standalone, hits, {"retrieve": retrieve_ms})
        answer.question, answer.rewritten_question = question, standalone if standalone != question else None
        answer.timings_ms["total"] = round((time.perf_counter() - start) * 1000, 1)
        self._conclude(answer, collection, history or [], conversation_id)
        return answer

    def _conclude(self, answer: Answer, collection: str, history: list[dict], conversation_id: str | None) -> None:
        """Decide the hand-off, record the answer, and send a recommended hand-off to the webhook (queued)."""
        unhelpful = self.feedback.conversation_rated_unhelpful(conversation_id)
        answer.handoff = self.handoff.decide(answer.question, history, answer, unhelpful).to_dict()
        answer.answer_id = self.feedback.record_answer(collection, answer, conversation_id)
        if answer.handoff["recommended"] and self.handoff_webhook is not None:
            self.handoff_webhook.submit({
                "reason": answer.handoff["reason"], "collection": collection, "conversation_id": conversation_id,
                "answer_id": answer.answer_id, "question": answer.question, "history": history,
                "answer": answer.answer, "abstained": answer.abstained, "grounding": answer.grounding,
                "citations": [{"n": c.n, "doc_id": c.doc_id, "source": c.source, "title": c.title}
                              for c in answer.citations]})

    def ask_stream(self, question: str, k: int = 5, collection: str = "default", history: list[dict] | None = None,
                   conversation_id: str | None = None):
        """Retrieve now (so an unknown collection fails before anything is sent), then an iterator of
        ("token", text) events and one ("final", Answer)."""
        if self.answerer is None:
            raise RuntimeError("this service was loaded without its answering models")
        start = time.perf_counter()
        standalone = standalone_question(question, history or [])
        hits = self.search(standalone, k, collection)
        timings = {"retrieve": round((time.perf_counter() - start) * 1000, 1)}

        def events():
            for kind, value in self.answerer.stream(standalone, hits, timings):
                if kind == "final":
                    value.question, value.rewritten_question = question, standalone if standalone != question else None
                    value.timings_ms["total"] = round((time.perf_counter() - start) * 1000, 1)
                    self._conclude(value, collection, history or [], conversation_id)
                yield kind, value
        return events()

    def remote_generator(self):
        """The RemoteGenerator answering, if one is configured (for /readyz and /metrics)."""
        from retrieval.generation.remote import RemoteGenerator

        generator = self.answerer.generator if self.answerer is not None else None
        return generator if isinstance(generator, RemoteGenerator) else None

    def close(self) -> None:
        for collection in self._collections.values():
            collection.close()
        if self.remote_generator() is not None:
            self.remote_generator().close()   # its connection pool
        if self.handoff_webhook is not None:
            self.handoff_webhook.close()
        self.feedback.close()
        if self._milvus is not None:
            self._milvus.close()


def hit_to_dict(hit: SearchHit) -> dict:
    c = hit.chunk
    return {"chunk_id": c.chunk_id, "doc_id": c.doc_id, "source": c.source, "title": c.title,
            "text": c.text, "score": round(hit.score, 6)}

