import numpy as np
import pytest
import torch

from distill.metrics import chunk_retrieval_metrics
from sentence_transformers.sentence_transformer.losses import MarginMSELoss, MultipleNegativesRankingLoss
from distill.mining import mine_triples
from distill.pseudo_queries import PseudoQuery, make_pseudo_queries, split_holdout
from distill.teacher_cache import TeacherCache
from ingest.records import Chunk


def test_pseudo_queries_from_titles_headings_questions_and_sentences():
    chunks = [
        Chunk("a", "a", "Billing guide", "", 0, "Intro line. Refunds are paid back within five days of the request."),
        Chunk("a", "a", "Billing guide", "Refund policy", 1, "Can I get a refund? Yes, always."),
        Chunk("a", "a", "Billing guide", "Refund policy", 2, "More text here."),
    ]
    queries = make_pseudo_queries(chunks, sentences_per_chunk=1)
    found = {(q.kind, q.text, q.chunk_id) for q in queries}
    assert ("title", "Billing guide", chunks[0].chunk_id) in found
    assert ("heading", "Refund policy", chunks[1].chunk_id) in found          # only the first chunk under it
    assert not any(q.kind == "heading" and q.chunk_id == chunks[2].chunk_id for q in queries)
    assert ("question", "Can I get a refund?", chunks[1].chunk_id) in found
    assert ("sentence", "Refunds are paid back within five days of the request.", chunks[0].chunk_id) in found
    assert make_pseudo_queries(chunks, sentences_per_chunk=1) == queries  # deterministic for a seed


def test_faq_answers_get_their_question_and_no_sentences():
    chunks = [
        Chunk("faq", "faq", "Can I get a refund?", "", 0, "Can I get a refund? Yes. Refunds are paid back within five days."),
        Chunk("faq", "faq", "Can I get a refund?", "", 1, "Intro again. Invoices are emailed on the first day of the month."),
        Chunk("help", "help", "Help", "Billing > How are invoices sent?", 0, "Intro. Invoices are emailed as PDF files every month."),
        Chunk("guide", "guide", "Billing guide", "", 0, "Intro line. Refunds are paid back within five days of the request."),
    ]
    found = {(q.kind, q.chunk_id) for q in make_pseudo_queries(chunks, sentences_per_chunk=1)}
    assert ("title", chunks[0].chunk_id) in found and ("heading", chunks[2].chunk_id) in found
    sentences = {chunk_id for kind, chunk_id in found if kind == "sentence"}
    assert sentences == {chunks[3].chunk_id}   # under a question title or heading: an FAQ answer, no sentence queries


def test_holdout_split_is_disjoint_and_sized():
    queries = [PseudoQuery(f"q{i}", "c", "d", "title") for i in range(20)]
    train, held = split_holdout(queries, 0.1)
    assert len(held) == 2 and len(train) == 18 and not set(train) & set(held)


# The trainer feeds sentence-transformers' losses one set of (query, positive, negative) embeddings: the contract
# it relies on, with values derived by hand.
def test_margin_mse_exact_value():
    q = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[0.6, 0.8]])
    n = torch.tensor([[0.0, 1.0]])
    # student margin = 0.6 - 0.0 = 0.6; teacher margin 0.2 -> (0.4)^2
    assert MarginMSELoss(None).compute_loss_from_embeddings([q, p, n], torch.tensor([0.2])).item() == pytest.approx(0.16)


def test_ranking_loss_is_cross_entropy_over_positives_and_every_negative():
    eye = torch.eye(3)
    loss = MultipleNegativesRankingLoss(None, scale=20.0)
    good = loss.compute_loss_from_embeddings([eye, eye, -eye], None)
    bad = loss.compute_loss_from_embeddings([eye, eye.roll(1, 0), -eye], None)
    assert good.item() < 0.01 < bad.item()
    # query 0 against candidates [e0, e1, e2, -e0, -e1, -e2]: logits 20, 0, 0, -20, 0, 0
    expected = -(20 - torch.logsumexp(torch.tensor([20.0, 0, 0, -20, 0, 0]), 0))
    assert good.item() == pytest.approx(expected.item(), rel=1e-5)


def test_mining_takes_negatives_from_other_documents_with_exact_margins():
    passages = np.eye(4, dtype=np.float32)
    query_vectors = np.array([[0.9, 0.5, 0.3, 0.1]], dtype=np.float32)
    q = PseudoQuery("q", "c0", "docA", "title")
    triples = mine_triples([q], query_vectors, passages, ["c0", "c1", "c2", "c3"], ["docA", "docA", "docB", "docC"],
                           from_rank=0, to_rank=1)
    [t] = triples
    assert (t.positive, t.negative) == (0, 2)  # c1 shares the document: skipped; c2 is the best other one
    assert t.teacher_margin == pytest.approx(0.9 - 0.3)


def test_chunk_retrieval_metrics_exact():
    passages = np.eye(3, dtype=np.float32)
    queries = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 0, 1]], dtype=np.float32)
    m = chunk_retrieval_metrics(queries, passages, gold=[0, 1, 2])
    assert m["hit@1"] == pytest.approx(2 / 3) and m["mrr@10"] == pytest.approx((1 + 0.5 + 1) / 3)


def test_teacher_cache_encodes_each_text_once(tmp_path, fake_encoder):
    cache = TeacherCache(tmp_path / "cache.sqlite", fake_encoder)
    first = cache.encode(["a b", "c d", "a b"])
    again = TeacherCache(tmp_path / "cache.sqlite", fake_encoder).encode(["c d", "a b", "e f"])
    assert fake_encoder.calls == [2, 1]
    assert np.allclose(first[0], again[1]) and np.allclose(first[1], again[0])


def test_teacher_work_survives_a_run_killed_in_the_teacher_stage(tmp_path, fake_encoder):
    # Issue 13, 7: the cache was written only once every text was encoded, so a kill lost all teacher work.
    texts = [f"text number {n}" for n in range(10)]
    real_encode, calls = fake_encoder.encode, []

    def dies_on_the_third_slice(batch, **kwargs):
        calls.append(len(batch))
        if len(calls) == 3:
            raise KeyboardInterrupt   # what a kill looks like from inside
        return real_encode(batch, **kwargs)

    fake_encoder.encode = dies_on_the_third_slice
    with pytest.raises(KeyboardInterrupt):
        TeacherCache(tmp_path / "cache.sqlite", fake_encoder, slice_size=3).encode(texts)
    fake_encoder.encode = real_encode
    again = TeacherCache(tmp_path / "cache.sqlite", fake_encoder, slice_size=3)
    vectors = again.encode(texts)
    assert again.encoded == 4 and vectors.shape == (10, fake_encoder.dim)   # 6 were kept; only 4 encoded again
    assert np.allclose(vectors, real_encode(texts))


def test_prune_versions_keeps_the_serving_one_and_the_newest(tmp_path):
    import os

    from retrieval.model_store import prune_versions

    for n in range(1, 6):
        (tmp_path / f"v{n:04d}").mkdir()
    (tmp_path / ".staging-999999999").mkdir()            # a pid no process has: abandoned
    (tmp_path / f".staging-{os.getpid()}").mkdir()        # this process: still writing
    removed = prune_versions(tmp_path, keep={"v0002"}, keep_last=2)
    assert sorted(removed) == [".staging-999999999", "v0001", "v0003"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".staging-{os.getpid()}", "v0002", "v0004", "v0005"])
