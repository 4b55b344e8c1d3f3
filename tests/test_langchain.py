from langchain_core.runnables import RunnableLambda

from serve.langchain import KbqaRetriever, grounded_answer
from serve.service import KbqaService
from serve.wiring import answer_pipeline
from serve.settings import Settings
from tests.fakes import ScriptedGenerator
from tests.fakes import make_kb


def test_retriever_and_answer_runnable_compose_in_a_chain(tmp_path, fake_encoder):
    settings = Settings(home=tmp_path / "home", min_relevance=0.1)
    service = KbqaService(settings, fake_encoder, answer_pipeline(settings, generator=ScriptedGenerator("Refunds are paid back within five days [1].")))
    service.ingest(make_kb(tmp_path / "kb"), "default")
    docs = KbqaRetriever(service=service, k=2).invoke("refunds paid back")
    assert len(docs) == 2 and docs[0].metadata["source"] == "billing.md" and docs[0].page_content
    chain = RunnableLambda(lambda q: {"question": q.strip()}) | grounded_answer(service)
    result = chain.invoke("  How are refunds paid back?  ")
    assert result["citations"][0]["source"] == "billing.md" and not result["abstained"]
