"""The running system: loaded models plus open collections, shared by the CLI and the API."""
from __future__ import annotations

import dataclasses
import functools
import os
import shutil
import threading
import time
import uuid
from typing import Iterator

from ingest.bounded import BoundedLoader
from ingest.chunker import Chunker
from ingest.language import ENGLISH, question_language
from ingest.pipeline import IngestReport
from retrieval.answering.cosine_scale import CosineScale
from retrieval.answering.pipeline import AnswerPipeline
from retrieval.answering.phrases import abstention
from retrieval.answering.prompt import ABSTENTION
from retrieval.answering.records import Answer
from retrieval.collection import Collection
from retrieval.encoder import SentenceEncoder, TextEncoder
from retrieval.filters import combined
from retrieval.home import check_collection_name
from retrieval.index_generations import IndexGenerations
from retrieval.models import MULTILINGUAL
from retrieval.search import SearchHit
from serve.customer import scope_of
from serve.documents import DocumentManager
from serve.feedback import FeedbackStore
from serve.handoff_webhook import HandoffWebhook
from serve.jobs import DistillJobs, distill_runner
from serve.settings import Settings


class CollectionExists(RuntimeError):
    """A collection of that name is already there."""


class KbqaService:
    def __init__(self, settings: Settings, encoder: TextEncoder, pipeline: AnswerPipeline | None = None,
                 encoder_loader=SentenceEncoder, distill_runner=distill_runner, named_encoder=None):
        """``pipeline`` answers questions (serve/wiring.py composes it); without one the service ingests and
        searches only. ``encoder_loader``: how a collection's distilled encoder folder is opened; ``named_encoder``:
        a shipped encoder by model name (the multilingual one), None to serve every collection with ``encoder``."""
        self.settings = settings
        self.home = settings.kbqa_home
        self.encoder = encoder  # default for collections without a distilled encoder of their own
        self.encoder_loader = encoder_loader
        self.named_encoder = named_encoder
        self.chunker = Chunker(encoder.count_tokens)
        self.loader = BoundedLoader(settings.load_timeout_s, settings.max_file_chars)   # per file: time and text
        self.pipeline = pipeline
        self.vector_store, self._milvus = IndexGenerations, None
        if settings.vector_store == "milvus":   # one client for every collection (retrieval/milvus_store.py)
            from retrieval.milvus_store import MilvusGenerations, connect

            token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
            self._milvus = connect(settings.milvus_uri or str(self.home.root / "milvus.db"), token)
            self.vector_store = functools.partial(MilvusGenerations, client=self._milvus)
        self._collections: dict[str, Collection] = {}
        self._lock = threading.Lock()
        self.feedback = FeedbackStore(self.home.root / "feedback.sqlite")
        secret = settings.handoff_secret
        self.handoff_webhook = HandoffWebhook(settings.handoff_webhook, secret.get_secret_value()) \
            if settings.handoff_webhook and secret else None
        self.documents = DocumentManager(self.chunker, settings.write_wait_s, self.loader)
        self.jobs = DistillJobs(distill_runner(self))   # (collection, on_stage) -> report
        self._composed: tuple = (None, None, None, None)   # (own map, shipped map, floor, composed map)

    @functools.cached_property
    def multilingual_scale(self) -> CosineScale:
        """The multilingual encoder's cosines on MiniLM's scale, which the selector and gap detector read."""
        return CosineScale.load()

    def cosine_reading(self, collection: Collection) -> tuple[float | None, CosineScale | None]:
        """(relevance floor, cosine map for the answer models) of the collection's encoder; (None, None): MiniLM's
        own. The multilingual encoder has its floor and map; one distilled from it on this collection has its own
        map onto e5's scale, through which both are read."""
        if collection.encoder_model != MULTILINGUAL:
            return None, None
        floor, scale = self.settings.multilingual_min_relevance, self.multilingual_scale
        own = collection.cosine_scale()
        if own is None or scale is None:
            return floor, scale
        if self._composed[0] is not own or self._composed[1] is not scale:   # once per map: the collection keeps it
            self._composed = (own, scale, own.inverse()(floor), own.then(scale))
        return self._composed[2], self._composed[3]

    @classmethod
    def load(cls, settings: Settings, with_generator: bool = True) -> "KbqaService":
        """The service over the prepared model folders (serve/wiring.py does the loading)."""
        from serve.wiring import load_service

        return load_service(settings, with_generator)

    def collection(self, name: str, create: bool = False) -> Collection:
        check_collection_name(name)
        with self._lock:
            if name not in self._collections:
                self._collections[name] = Collection(self.home.collection_dir(name), self.encoder, create=create,
                                                     encoder_loader=self.encoder_loader,
                                                     named_encoder=self.named_encoder,
                                                     vector_store=self.vector_store)
            return self._collections[name]

    def collection_names(self) -> list[str]:
        return self.home.collections()

    def create_collection(self, name: str, encoder: str | None = None) -> Collection:
        if name in self.collection_names():
            raise CollectionExists(f"collection {name!r} already exists")
        if encoder is not None and self.named_encoder is None:   # checked before anything is created
            raise ValueError("this service loads no shipped encoder by name (serve/wiring.load_service gives one)")
        collection = self.collection(name, create=True)
        if encoder == "multilingual":
            collection.use_shipped_encoder(MULTILINGUAL)
        collection.mark_created()   # listed from now on, empty as it is (retrieval/home.py)
        collection.refresh()
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

    def ingest(self, path, collection: str = "default", show_progress: bool = False,
               path_rule: str | None = None, encoder: str | None = None) -> IngestReport:
        """Ingest into ``collection``, creating it; a new collection that ends up holding nothing (the path is
        missing, every file failed) is removed again, so a failed ingest never leaves an empty one listed.
        ``path_rule``: the collection's folder rule from now on (ingest/path_metadata.py), None: the stored one.
        ``encoder``: "multilingual" serves it with the multilingual encoder from now on (re-embedding it)."""
        is_new = collection not in self.collection_names()
        try:
            target = self.collection(collection, create=True)
            if encoder == "multilingual":
                target.use_shipped_encoder(MULTILINGUAL, show_progress=show_progress)
            elif encoder is not None:
                raise ValueError(f"unknown encoder {encoder!r}: the choice is 'multilingual'")
            report = target.ingest(path, self.chunker, show_progress=show_progress, load=self.loader,
                                   path_rule=path_rule)
        except BaseException:
            if is_new:
                self.delete_collection(collection)
            raise
        if is_new and report.chunks_total == 0:
            self.delete_collection(collection)
        return report

    def search(self, query: str, k: int = 5, collection: str = "default",
               filter: dict | None = None) -> list[SearchHit]:
        """``filter``: a metadata filter (retrieval/filters.py), the key's slice already AND-ed in by the route."""
        return self.collection(collection).search(query, k, self.settings.search_mode, filter)

    def ask(self, question: str, k: int = 5, collection: str = "default", history: list[dict] | None = None,
            conversation_id: str | None = None, key_id: str | None = None, filter: dict | None = None,
            customer: dict | None = None) -> Answer:
        final = None
        for kind, value in self.ask_stream(question, k, collection, history, conversation_id, key_id, filter,
                                           customer):
            if kind == "final":
                final = value
        return final

    def ask_stream(self, question: str, k: int = 5, collection: str = "default", history: list[dict] | None = None,
                   conversation_id: str | None = None, key_id: str | None = None,
                   filter: dict | None = None, customer: dict | None = None) -> Iterator[tuple[str, object]]:
        """Retrieve now (so an unknown collection fails before anything is sent), then an iterator of
        ("token", text) events and one ("final", Answer), recorded (and a recommended hand-off sent) before it is
        yielded. ``conversation_id`` is the client's, scoped to ``key_id`` (the API key asking) and ``collection``:
        without ``history`` or ``customer``, the conversation's kept ones are used. ``customer``: the customer's
        context, scoped by the collection's customer rules (serve/customer.py)."""
        if self.pipeline is None:
            raise RuntimeError("this service was loaded without its answering models")
        rules = self.collection(collection).customer_rules   # UnknownCollection before anything else
        if conversation_id and (not history or customer is None):
            kept, kept_customer = self.feedback.conversation(
                conversation_id, collection, key_id, time.time() - self.settings.conversation_ttl_s,
                self.settings.conversation_turns)
            history = history or kept
            customer = customer if customer is not None else kept_customer
        history = history or []
        scope = scope_of(customer, rules)
        narrowed = combined(filter, scope.filter)

        def search(standalone: str) -> list[SearchHit]:
            return scope.search(lambda query, n: self.search(query, n, collection, narrowed), standalone, k)

        floor, scale = self.cosine_reading(self.collection(collection))
        events = self.pipeline.stream(question, search,
                                      history,
                                      answer_id=uuid.uuid4().hex,
                                      rated_unhelpful=self.feedback.conversation_rated_unhelpful(
                                          conversation_id, collection, key_id),
                                      min_relevance=floor, cosine_scale=scale)

        languages = self.collection(collection).languages()
        language = question_language(question, next(iter(languages), ENGLISH))

        def recorded():
            for kind, value in events:
                if kind == "token" and value == ABSTENTION:
                    value = abstention(language)
                if kind == "final":
                    value = dataclasses.replace(value, context=scope.context(), language=language,
                                                answer=abstention(language) if value.abstained else value.answer)
                    self._record(value, collection, history, conversation_id, key_id, customer)
                yield kind, value
        return recorded()

    def _record(self, answer: Answer, collection: str, history: list[dict], conversation_id: str | None,
                key_id: str | None = None, customer: dict | None = None) -> None:
        """Record the answer, and send a recommended hand-off to the webhook (queued)."""
        self.feedback.record_answer(collection, answer, conversation_id, key_id, customer)
        if answer.handoff.recommended and self.handoff_webhook is not None:
            self.handoff_webhook.submit({
                "reason": answer.handoff.reason, "collection": collection, "conversation_id": conversation_id,
                "customer": customer, "context": answer.context,
                "answer_id": answer.answer_id, "question": answer.question, "history": history,
                "answer": answer.answer, "abstained": answer.abstained, "grounding": answer.grounding,
                "citations": [{"n": c.n, "doc_id": c.doc_id, "source": c.source, "title": c.title}
                              for c in answer.citations]})

    def remote_generator(self):
        """The RemoteGenerator answering, if one is configured (for /readyz and /metrics)."""
        from retrieval.answering.engines.remote import RemoteGenerator

        writer = self.pipeline.writer if self.pipeline is not None else None
        generator = writer.generator if writer is not None else None
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
            "text": c.text, "score": round(hit.score, 6), "metadata": hit.metadata}

