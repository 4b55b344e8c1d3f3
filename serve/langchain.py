"""kbqa inside LangChain: the retriever as a ``BaseRetriever``, the grounded answer step as a ``Runnable``.

    from serve.langchain import KbqaRetriever, grounded_answer
    retriever = KbqaRetriever(service=service, collection="default", k=5, search_kwargs={"filter": {"plan": "pro"}})
    docs = retriever.invoke("How do I cancel?")              # list[Document] with kbqa metadata
    docs = retriever.invoke("How do I cancel?", filter={"product": "tv"})   # this call's filter instead
    answer = grounded_answer(service).invoke({"question": "How do I cancel?"})   # dict: answer, citations, ...
"""
from __future__ import annotations

from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import Runnable, RunnableLambda
from pydantic import ConfigDict


class KbqaRetriever(BaseRetriever):
    """Hybrid (or the configured mode) search over one kbqa collection."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    service: Any
    collection: str = "default"
    k: int = 5
    # As LangChain's vector-store retrievers: search_kwargs={"filter": {...}} (a metadata filter, retrieval/filters.py).
    search_kwargs: dict = {}

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun,
                                **kwargs) -> list[Document]:
        options = {**self.search_kwargs, **kwargs}
        hits = self.service.search(query, options.get("k", self.k), self.collection, options.get("filter"))
        # The document's own metadata first, kbqa's fields over it.
        return [Document(page_content=h.chunk.text, id=h.chunk.chunk_id,
                         metadata={**h.metadata, "chunk_id": h.chunk.chunk_id, "doc_id": h.chunk.doc_id,
                                   "source": h.chunk.source, "title": h.chunk.title, "heading": h.chunk.heading,
                                   "score": h.score, "cosine": h.dense_score}) for h in hits]


def grounded_answer(service, collection: str = "default", k: int = 5) -> Runnable:
    """A Runnable: {"question": str} (or a plain str) -> the same dict /v1/ask returns."""

    def run(question: str | dict) -> dict:
        text = question["question"] if isinstance(question, dict) else question
        return service.ask(text, k, collection).to_dict()

    return RunnableLambda(run, name="kbqa_grounded_answer")
