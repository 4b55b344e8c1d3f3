"""The hybrid fusion weight: weighted RRF, kept per collection for the encoder it was fitted for, and fitted on
held-out questions by `kbqa distill` (distill/fusion_fit.py)."""
from types import SimpleNamespace

import pytest

from distill.fusion_fit import fit_dense_weight, weight_table
from ingest.chunker import Chunker
from retrieval.collection import Collection
from retrieval.fusion import FUSION_META, fusion_record, reciprocal_rank_fusion, stored_dense_weight
from tests.fakes import DOCS, FakeEncoder, make_kb

# Words a customer uses for the docs' words: the encoder knows them, BM25 does not.
SYNONYMS = {"reimbursement": "refunds", "returned": "paid", "bills": "invoices", "mailed": "emailed",
            "trackers": "cookies", "private": "personal", "coworkers": "colleagues", "add": "invite"}


class SynonymEncoder(FakeEncoder):
    @staticmethod
    def words(text):
        return [SYNONYMS.get(word, word) for word in FakeEncoder.words(text)]


def ingested(tmp_path, encoder):
    collection = Collection(tmp_path / "home" / "docs", encoder, create=True)
    collection.ingest(make_kb(tmp_path / "kb", DOCS), Chunker(encoder.count_tokens, chunk_tokens=50, overlap_tokens=5))
    return collection


def ids(hits):
    return [h.chunk.chunk_id for h in hits]


def test_weighted_fusion_at_equal_weights_is_the_unweighted_fusion_exactly():
    rankings = [["a", "b", "c"], ["b", "d"]]
    assert reciprocal_rank_fusion(rankings, weights=[1.0, 1.0]) == reciprocal_rank_fusion(rankings)
    fused = dict(reciprocal_rank_fusion(rankings, weights=[1.6, 0.4]))
    assert fused["a"] == pytest.approx(1.6 / 61) and fused["d"] == pytest.approx(0.4 / 62)


def test_the_weight_steers_hybrid_search_and_is_kept_for_its_encoder_only(tmp_path):
    collection = ingested(tmp_path, FakeEncoder())
    assert collection.dense_weight == 0.5
    question = "refunds paid back within five days invoices"
    dense, lexical = (ids(collection.search(question, 4, mode)) for mode in ("dense", "bm25"))
    collection.set_dense_weight(1.0, questions=40)
    assert ids(collection.search(question, 4, "hybrid")) == dense
    collection.set_dense_weight(0.0)
    assert ids(collection.search(question, 4, "hybrid"))[:len(lexical)] == lexical
    # Another process reading the same store sees the fitted weight at once.
    assert Collection(collection.directory, FakeEncoder()).dense_weight == 0.0
    # A weight fitted for another encoder, or a record nobody can read, serves equal weights.
    with collection.store.transaction():
        collection.store.set_meta(FUSION_META, fusion_record(0.9, "another-encoder@2"))
    assert collection.dense_weight == 0.5 and collection.stats()["hybrid_dense_weight"] == 0.5
    with collection.store.transaction():
        collection.store.set_meta(FUSION_META, "{not json")
    assert collection.dense_weight == 0.5 and collection.search(question, 2, "hybrid")
    with pytest.raises(ValueError, match="not in"):
        collection.set_dense_weight(1.5)
    assert stored_dense_weight(fusion_record(0.7, "fake@1"), "fake@1") == 0.7


def test_customers_own_words_fit_the_weight_towards_the_encoder_that_knows_them(tmp_path):
    collection = ingested(tmp_path, SynonymEncoder())
    chunk_of = {c.source + c.heading: c.chunk_id for c in collection.store.all_chunks()}
    # Each question: the gold chunk in synonyms (dense finds it) and a literal word of another doc (BM25 is misled).
    asked = [("when is my reimbursement returned colleagues", "billing.mdRefunds"),
             ("are bills mailed cookies", "billing.mdInvoices"),
             ("we never store private data or trackers invoices", "privacy.md"),
             ("add coworkers from the team settings refunds", "faq/teams.md")]
    questions = [SimpleNamespace(text=text, chunk_id=chunk_of[key]) for text, key in asked]
    table = weight_table(collection, questions)
    assert table[1.0] == 1.0 and table[0.5] < 1.0
    fit = fit_dense_weight(collection, questions, min_questions=4)
    assert fit.fitted and fit.dense_weight == 1.0 and collection.dense_weight == 1.0
    assert fit.mrr_by_weight["1.0"] == 1.0 and "4 held-out questions" in fit.reason


def test_too_few_questions_keep_the_weight_and_ties_keep_equal_fusion(tmp_path):
    collection = ingested(tmp_path, FakeEncoder())
    chunks = collection.store.all_chunks()
    questions = [SimpleNamespace(text=c.text, chunk_id=c.chunk_id) for c in chunks]
    fit = fit_dense_weight(collection, questions)   # 4 < MIN_QUESTIONS
    assert not fit.fitted and fit.dense_weight == 0.5 and collection.store.get_meta(FUSION_META) is None
    fit = fit_dense_weight(collection, questions, min_questions=2)   # both rankings find every chunk: a tie
    assert fit.fitted and fit.dense_weight == 0.5
