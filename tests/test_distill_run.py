"""kbqa distill end to end on tiny models built in the test (a 48-d 'teacher', a 32-d 'student')."""
import json
import shutil

import pytest

import distill.run as distill_run
import distill.trainer as trainer
from distill.config import DistillConfig
from distill.run import distill_collection, freshness
from ingest.chunker import Chunker
from retrieval.collection import Collection
from retrieval.encoder import SentenceEncoder
from retrieval.models import MULTILINGUAL, STUDENT_START, TEACHER
from tests.fakes import make_kb
from tests.tiny_models import build_tiny_sentence_encoder

DOCS = {
    f"doc{i}.md": f"# {title}\n{body}\n## How do I {verb}?\nYou can {verb} from the settings page. We never store personal data."
    for i, (title, body, verb) in enumerate([
        ("Billing", "Refunds are paid within five days.", "cancel my subscription"),
        ("Privacy", "We never use cookies or store personal data.", "delete my account"),
        ("Teams", "Invite colleagues from the team settings page.", "add a new website"),
        ("Exports", "Export stats as csv from the dashboard.", "change my email"),
        ("Passwords", "Reset the password from the account page.", "reset my password"),
    ])
}


@pytest.fixture
def setup(tmp_path):
    models = tmp_path / "models"
    build_tiny_sentence_encoder(models / TEACHER, hidden=48, seed=1)
    build_tiny_sentence_encoder(models / STUDENT_START, hidden=32, seed=2)
    encoder = SentenceEncoder(models / STUDENT_START, device="cpu")
    collection = Collection(tmp_path / "home" / "default", encoder, create=True, encoder_loader=SentenceEncoder)
    kb = make_kb(tmp_path / "kb", DOCS)
    collection.ingest(kb, Chunker(encoder.count_tokens, chunk_tokens=30, overlap_tokens=5))
    return models, collection, kb


def synthetic_for(chunks) -> list:
    """Ten teacher-style questions per chunk, each answered by the chunk's first sentence."""
    from distill.teacher_questions import SyntheticQuestion

    return [SyntheticQuestion(f"{ask} {c.text.split('.')[0].lower()}?", c.chunk_id, c.text.split(".")[0])
            for ask in ("Can you tell me whether", "Is it true that", "I read that", "Why is it that", "How come",
                        "Could you confirm that", "Do you know if", "Please explain why", "Is there help on how",
                        "What does it mean that")
            for c in chunks]


def config(**overrides):
    return DistillConfig(batch_size=4, max_examples=16, holdout_ratio=0.3, **overrides)


def test_full_run_writes_a_versioned_student_and_promotes_only_if_better(setup):
    models, collection, _ = setup
    before = collection.store.get_meta("encoder")
    report = distill_collection(collection, models, config(), device="cpu")
    final = collection.directory / "encoders" / report.version
    assert report.mode == "full" and report.version == "v0001" and report.triples > 0
    assert json.loads((final / "distill_config.json").read_text())["batch_size"] == 4
    assert json.loads((final / "metrics.json").read_text())["student"]["queries"] == report.held_out
    # The decision follows the measured figures, and the served encoder follows the decision.
    assert report.promoted == (report.student["mrr@10"] > report.serving["mrr@10"])
    assert (collection.encoder_dir == final) == report.promoted
    assert (collection.store.get_meta("encoder") != before) == report.promoted
    assert collection.search("refunds", k=1)  # serving either way


def test_a_student_that_learnt_nothing_is_not_promoted(setup):
    """lr=0: the student is the serving encoder's own weights, so it cannot beat it and must be kept out."""
    models, collection, _ = setup
    before = collection.store.get_meta("encoder")
    report = distill_collection(collection, models, config(lr=0.0), device="cpu")
    assert report.promoted is False and "kept" in report.reason
    assert report.student["mrr@10"] == pytest.approx(report.serving["mrr@10"])
    assert collection.store.get_meta("encoder") == before and collection.encoder_dir is None
    assert (collection.directory / "encoders" / report.version).is_dir()   # kept on disk, not served


def test_teacher_vectors_are_cached_between_runs(setup):
    models, collection, _ = setup
    first = distill_collection(collection, models, config(full=True), device="cpu")
    second = distill_collection(collection, models, config(full=True), device="cpu")
    assert first.teacher_texts_encoded > 0 and second.teacher_texts_encoded == 0
    assert second.version == "v0002"


def test_interrupted_training_leaves_the_serving_state_alone(setup, monkeypatch):
    models, collection, _ = setup
    before = (collection.store.get_meta("encoder"), collection.store.generation)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(distill_run, "train_student", interrupted)
    with pytest.raises(KeyboardInterrupt):
        distill_collection(collection, models, config(), device="cpu")
    assert (collection.store.get_meta("encoder"), collection.store.generation) == before
    assert not list(collection.directory.glob("encoders/v*"))


def test_incremental_run_trains_on_new_chunks_plus_replay(setup):
    models, collection, kb = setup
    # A student serves (promoted by hand here: the promotion decision is tested above), then the docs change.
    encoder_dir = collection.directory / "encoders" / "v0001"
    shutil.copytree(models / STUDENT_START, encoder_dir)
    (encoder_dir / "kbqa-manifest.json").write_text((encoder_dir / "kbqa-manifest.json").read_text().replace("built in the test", "v0001"))
    candidate = SentenceEncoder(encoder_dir, device="cpu")
    chunks = collection.store.all_chunks()
    ids = [c.chunk_id for c in chunks]
    collection.promote(candidate, encoder_dir, dict(zip(ids, candidate.encode([c.embedding_text() for c in chunks]))),
                       trained_on=ids)
    (kb / "new.md").write_text("# Invoices\nInvoices are emailed monthly to the billing email.")
    collection.ingest(kb, Chunker(candidate.count_tokens, chunk_tokens=30, overlap_tokens=5))
    status = freshness(collection)
    assert status["chunks_newer_than_encoder"] == 1 and status["encoder_dir"] == str(encoder_dir)
    report = distill_collection(collection, models, config(replay_min=3), device="cpu")
    assert report.mode == "incremental" and report.chunks_new == 1 and report.chunks_trained_on == 4
    started = json.loads((collection.directory / "encoders" / report.version / "distill_config.json").read_text())
    assert started["started_from"] == str(encoder_dir)
    if report.promoted:
        assert distill_collection(collection, models, config(), device="cpu").mode == "up to date"


def test_logged_customer_questions_are_scrubbed_trained_on_and_decide_promotion(setup, monkeypatch):
    models, collection, _ = setup
    seen = {}
    real_train = distill_run.train_student

    def spy(student, triples, passages, config, device, show_progress=False, always=None, **kwargs):
        seen["always"] = [t.query for t in always or []]
        return real_train(student, triples, passages, config, device, show_progress, always, **kwargs)

    monkeypatch.setattr(distill_run, "train_student", spy)
    asked = [f"how do I get refund number {n} for my plan" for n in range(60)] + [
        "mail me at jane.doe@example.com about refunds", "ok", "OK"]
    report = distill_collection(collection, models, config(), device="cpu", logged_questions=asked)
    # 61 usable (the one-word ones go), 30% of them held out: they weigh in the promotion decision.
    assert report.logged_questions == 61 and report.logged_held_out == 18
    assert report.student_logged["queries"] == 18 == report.serving_logged["queries"]
    assert "held-out logged questions" in report.reason
    assert len(seen["always"]) == 43 and not any("jane" in q for q in seen["always"])
    # Promoted: the next incremental run is up to date until customers ask something new.
    if report.promoted:
        assert distill_collection(collection, models, config(), device="cpu", logged_questions=asked).mode == \
            "up to date"
        again = distill_collection(collection, models, config(), device="cpu",
                                   logged_questions=asked + ["what about refunds for yearly plans"])
        assert again.mode == "incremental"


def test_cli_and_http_job_share_one_distill_flow_with_the_team_questions_before_and_after(tmp_path):
    from distill.team_eval import EVAL_QUESTIONS
    from serve.jobs import distill_runner
    from serve.service import KbqaService
    from serve.settings import Settings

    settings = Settings(home=tmp_path / "home")
    models = settings.kbqa_home.models_dir
    build_tiny_sentence_encoder(models / TEACHER, hidden=48, seed=1)
    build_tiny_sentence_encoder(models / STUDENT_START, hidden=32, seed=2)
    service = KbqaService(settings, SentenceEncoder(models / STUDENT_START, device="cpu"),
                          encoder_loader=SentenceEncoder)
    service.ingest(make_kb(tmp_path / "kb", DOCS), "default")
    questions = [{"question": "How are refunds paid?", "gold_ids": ["doc0.md"]},
                 {"question": "How do I reset my password?", "gold_ids": ["doc4.md"]}]
    (service.home.collection_dir("default") / EVAL_QUESTIONS).write_text(
        "".join(json.dumps(q) + "\n" for q in questions))
    stages = []
    # What POST /v1/collections/{name}/distill runs; `kbqa distill` calls the same serve.jobs.run_distill.
    report = distill_runner(service)("default", stages.append)
    assert report["collection"] == "default" and report["mode"] == "full"
    assert set(report["eval"]) == {"before", "after"} and report["eval"]["before"]["questions"] == 2
    assert stages[0] == "evaluating" and stages[-1] == "evaluating" and "training" in stages
    assert "kbqa prepare --teacher" in report["synthetic"]["skipped"] and report["synthetic_questions"] == 0
    service.close()


def test_synthetic_questions_are_trained_on_and_held_out_questions_weigh_in_promotion(setup):
    from distill.teacher_questions import SyntheticQuestion

    models, collection, _ = setup
    chunks = collection.store.all_chunks()
    synthetic = synthetic_for(chunks)
    synthetic += [SyntheticQuestion("How is an orphan handled?", "no-such-chunk", "")]   # a chunk since removed
    assert len(synthetic) - 1 >= 50
    report = distill_collection(collection, models, config(), device="cpu", synthetic_questions=synthetic)
    assert report.synthetic_questions == len(synthetic) - 1 and report.synthetic_held_out > 0
    assert "mrr@10" in report.student_synthetic and "mrr@10" in report.serving_synthetic
    assert "held-out synthetic questions (mean)" in report.reason
    # The held-out questions also decide the hybrid weight (fitted in tests/test_fusion_fit.py); 23 are too few here.
    assert report.fusion["questions"] == report.synthetic_held_out == 23 and not report.fusion["fitted"]
    assert "(< 30)" in report.fusion["reason"]
    assert collection.dense_weight == report.fusion["dense_weight"]


def test_a_multilingual_collection_is_distilled_from_its_own_encoder_with_its_prefixes(tmp_path, monkeypatch):
    """No larger multilingual teacher is bundled: the multilingual encoder teaches a copy of itself, questions and
    passages read with its prefixes, its word embeddings left alone; a promoted student keeps the collection
    multilingual in every process (the cross-language rules, floor and cosine map go on applying)."""
    import itertools

    import torch

    from distill.teacher_translations import TranslatedQuestion
    from retrieval.e5_port import PROMPTS_FILE
    from retrieval.models import model_path

    models = tmp_path / "models"
    start = build_tiny_sentence_encoder(models / MULTILINGUAL, hidden=32, seed=3)
    (start / PROMPTS_FILE).write_text(json.dumps({"query": "query: ", "passage": "passage: "}))
    named = {}

    def shipped(name):
        return named.setdefault(name, SentenceEncoder(model_path(models, name), device="cpu"))

    english = build_tiny_sentence_encoder(models / STUDENT_START, hidden=32, seed=2)
    encoder = SentenceEncoder(english, device="cpu")
    collection = Collection(tmp_path / "home" / "c", encoder, create=True, encoder_loader=SentenceEncoder,
                            named_encoder=shipped)
    collection.use_shipped_encoder(MULTILINGUAL)
    collection.ingest(make_kb(tmp_path / "kb", DOCS), Chunker(encoder.count_tokens, chunk_tokens=30, overlap_tokens=5))
    read = []
    real_embed = trainer._embed
    monkeypatch.setattr(trainer, "_embed",
                        lambda student, texts, device: read.extend(texts) or real_embed(student, texts, device))
    # The gate is made to promote (the serving figures first, then the student's): what promotion writes is tested.
    verdicts = itertools.cycle([0.0, 1.0])
    real_metrics = distill_run.chunk_retrieval_metrics
    monkeypatch.setattr(distill_run, "chunk_retrieval_metrics",
                        lambda *a: {**real_metrics(*a), "mrr@10": next(verdicts)})
    fitted_on = []
    real_scale = distill_run.student_scale
    monkeypatch.setattr(distill_run, "student_scale",
                        lambda student, serving, previous: fitted_on.append(len(student[0])) or real_scale(
                            student, serving, previous))
    synthetic = synthetic_for(collection.store.all_chunks())
    translated = [TranslatedQuestion(f"auf Deutsch: {q.question}", q.question, q.chunk_id, "de") for q in synthetic]
    report = distill_collection(collection, models, config(), device="cpu", synthetic_questions=synthetic,
                                translated_questions=translated)
    assert report.triples > 0 and read and report.promoted
    # The map onto e5's scale is fitted on the held-out pseudo-queries and synthetic questions, not the translations:
    # e5's floor was calibrated on questions in the documents' language.
    assert report.translated_held_out > 0 and fitted_on == [2]
    assert all(t.startswith(("query: ", "passage: ")) for t in read)
    final = collection.directory / "encoders" / report.version
    assert json.loads((final / PROMPTS_FILE).read_text())["query"] == "query: "
    trained, begun = (SentenceEncoder(folder, device="cpu").model for folder in (final, start))
    words = [name for name, _ in begun.named_parameters() if "word_embeddings" in name]
    assert words and all(torch.equal(dict(trained.named_parameters())[n], dict(begun.named_parameters())[n])
                         for n in words)
    assert any(not torch.equal(a, b) for (n, a), (_, b) in zip(trained.named_parameters(), begun.named_parameters())
               if n not in words)
    # Promoted: still multilingual after a reopen, with its own cosines' map onto e5's scale (monotone).
    student = SentenceEncoder(final, device="cpu")
    assert collection.encoder_model == MULTILINGUAL and collection.cosine_scale() is not None
    collection.close()
    reopened = Collection(tmp_path / "home" / "c", encoder, encoder_loader=SentenceEncoder, named_encoder=shipped)
    assert reopened.encoder_model == MULTILINGUAL and reopened.encoder.encoder_id == student.encoder_id
    own = reopened.cosine_scale()
    assert own is not None and own(0.2) <= own(0.5) <= own(0.8)
    assert reopened.search("refunds", k=1)


def test_translated_questions_are_read_as_their_source_and_held_out_with_it(setup, monkeypatch):
    """Cross-lingual distillation: a translation is mined and scored with the teacher's vector of its English source,
    and is held out exactly when its source is (no student judged on a question it learnt in another language)."""
    from distill.teacher_translations import TranslatedQuestion

    models, collection, _ = setup
    chunks = collection.store.all_chunks()
    synthetic = synthetic_for(chunks)
    translated = [TranslatedQuestion(f"auf Deutsch: {q.question}", q.question, q.chunk_id, "de") for q in synthetic]
    translated.append(TranslatedQuestion("verwaist?", "How is an orphan handled?", "no-such-chunk", "de"))
    mined = {}
    real_mine = distill_run.mine_triples

    def mine(queries, vectors, *rest):
        mined.update({q.text: vectors[i] for i, q in enumerate(queries)})
        return real_mine(queries, vectors, *rest)

    monkeypatch.setattr(distill_run, "mine_triples", mine)
    report = distill_collection(collection, models, config(), device="cpu", synthetic_questions=synthetic,
                                translated_questions=translated)
    assert report.translated_questions == len(synthetic) and report.translated_held_out == report.synthetic_held_out
    assert "held-out translated questions" in report.reason and "mrr@10" in report.student_translated
    trained = [t for t in translated if t.question in mined]
    assert len(trained) == len(synthetic) - report.synthetic_held_out
    for t in trained:   # the source's own vector, not the teacher's reading of the translation
        assert t.source in mined and (mined[t.question] == mined[t.source]).all()
    assert not any(t.source in mined for t in translated if t.question not in mined)


def test_the_distill_flow_translates_teacher_questions_into_the_customers_languages(tmp_path, monkeypatch):
    """`kbqa distill` and the API's job: a multilingual collection's teacher questions are translated into the
    languages its customers ask in (kept in the store) and trained on; an English collection's are not."""
    import contextlib

    import serve.wiring as wiring
    from retrieval.e5_port import PROMPTS_FILE
    from serve.jobs import run_distill
    from serve.service import KbqaService
    from serve.settings import Settings

    settings = Settings(home=tmp_path / "home")
    models = settings.kbqa_home.models_dir
    build_tiny_sentence_encoder(models / TEACHER, hidden=48, seed=1)
    build_tiny_sentence_encoder(models / STUDENT_START, hidden=32, seed=2)
    start = build_tiny_sentence_encoder(models / MULTILINGUAL, hidden=32, seed=3)
    (start / PROMPTS_FILE).write_text(json.dumps({"query": "query: ", "passage": "passage: "}))
    asked = []

    class Teacher:
        name = "scripted-teacher"

        def generate(self, messages):
            asked.append(messages[0]["content"])
            if "German" in messages[0]["content"]:
                return f"Wie lange dauert es bitte, bis das erledigt ist, Nummer {len(asked)}?", 20, 10
            text = messages[1]["content"].split("\n\n", 1)[1]
            words = " ".join(text.split()[:6]).strip(".")
            return "\n".join(f"{ask} {words}?" for ask in ("Is it true that", "Why is it that", "How come")), 20, 10

    monkeypatch.setattr(wiring, "teacher_unavailable", lambda settings: None)
    monkeypatch.setattr(wiring, "teacher_llm", lambda settings: contextlib.nullcontext(Teacher()))
    service = KbqaService(settings, SentenceEncoder(models / STUDENT_START, device="cpu"),
                          encoder_loader=SentenceEncoder, named_encoder=wiring.SharedEncoders(models, lambda e: e))
    service.ingest(make_kb(tmp_path / "kb", DOCS), "default")
    english = run_distill(service, "default", config())
    assert english["synthetic"]["kept"] > 0 and "English only" in english["translations"]["skipped"]
    assert not any("Translate" in prompt for prompt in asked)
    service.ingest(make_kb(tmp_path / "kb2", DOCS), "multi")
    collection = service.collection("multi")
    collection.use_shipped_encoder(MULTILINGUAL)
    assert "English only" in run_distill(service, "multi", config(full=True))["translations"]["skipped"]
    collection.set_question_languages(["de"])
    report = run_distill(service, "multi", config(full=True))
    translations = report["translations"]
    assert translations["languages"] == ["de"] and translations["kept"] == report["synthetic"]["kept"] > 0
    assert report["translated_questions"] > 0 and service.collection("multi").stats()["question_languages"] == ["de"]
    service.close()
