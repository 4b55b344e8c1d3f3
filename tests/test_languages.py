"""Issue 29: languages detected at ingest and ask time, the multilingual encoder chosen for a collection, CJK in BM25,
and kbqa's own words in the customer's language."""
import pytest

from ingest.language import ENGLISH, detect, document_language, from_metadata, question_language
from retrieval.answering.phrases import ABSTENTIONS, abstention, sources_label
from retrieval.answering.prompt import ABSTENTION
from retrieval import index_generations
from retrieval.bm25 import BM25Index, analysed, tokenize
from retrieval.collection import Collection
from retrieval.collection_encoder import MODEL_META
from retrieval.models import MULTILINGUAL
from tests.fakes import FakeEncoder, NamedFakes as Named, ScriptedGenerator, make_kb

GERMAN = ("# Passwort zurücksetzen\nUm Ihr Passwort zurückzusetzen, öffnen Sie die Einstellungen und klicken Sie "
          "auf Passwort vergessen. Sie erhalten danach eine E-Mail mit einem Link.")


def test_detection_calls_clear_text_and_declines_too_little():
    found = detect("Um Ihr Passwort zurückzusetzen, öffnen Sie die Einstellungen und klicken Sie auf den Link.")
    assert found.language == "de" and found.confidence > 0.9
    assert detect("OK") is None and detect("4242 / 17") is None


@pytest.mark.parametrize("metadata, expected", [({"language": "de"}, "de"), ({"lang": "pt_BR"}, "pt"),
                                                ({"locale": "fr-CA"}, "fr"), ({"language": 7}, None), ({}, None)])
def test_declared_language_is_read_from_metadata(metadata, expected):
    assert from_metadata(metadata) == expected


def test_a_document_is_english_unless_declared_or_surely_other():
    assert document_language("Passwort", GERMAN, {}) == "de"
    assert document_language("Billing", "Refunds are paid back within five days.", {}) == ENGLISH
    assert document_language("Billing", "Refunds are paid back within five days.", {"language": "es"}) == "es"
    assert document_language("", "VPN 2.1", {}) == ENGLISH   # nothing to tell: what every collection used to be


def test_a_question_leaves_the_collections_language_only_when_clearly_another():
    assert question_language("yes i did", "en") == "en"   # read as Catalan at ~0.7 on its own
    assert question_language("¿Cómo cancelo mi suscripción mensual?", "en") == "es"
    assert question_language("Wie setze ich mein Passwort zurück?", "en") == "de"
    assert question_language("パスワードをリセットするにはどうすればよいですか", "en") == "ja"
    assert question_language("Billing?", "de") == "de"


def test_documents_that_are_not_english_switch_the_collection_to_the_multilingual_encoder(tmp_path, fake_encoder):
    named = Named()
    collection = Collection(tmp_path / "c", fake_encoder, create=True, named_encoder=named)
    kb = make_kb(tmp_path / "kb")
    collection.ingest(kb, chunker())
    assert collection.encoder is fake_encoder and collection.store.get_meta(MODEL_META) is None
    assert collection.stats()["languages"] == {"en": 3}
    (kb / "passwort.md").write_text(GERMAN)
    report = collection.ingest(kb, chunker())
    multilingual = named.loaded[MULTILINGUAL]
    assert collection.encoder is multilingual and collection.store.get_meta(MODEL_META) == MULTILINGUAL
    assert report.added == ["passwort.md"] and sum(multilingual.calls) == collection.store.counts()["chunks"]
    assert collection.stats()["languages"] == {"en": 3, "de": 1}
    assert collection.search("Passwort vergessen", 1)[0].metadata["language"] == "de"
    collection.close()
    # A new process adopts the stored choice; one that cannot load shipped encoders by name says what to do.
    reopened = Collection(tmp_path / "c", fake_encoder, named_encoder=Named())
    assert reopened.search("Passwort", 1)[0].chunk.source == "passwort.md"
    assert reopened.encoder.encoder_id == f"{MULTILINGUAL}@1"
    with pytest.raises(RuntimeError, match="re-embed|embedded with"):
        Collection(tmp_path / "c", fake_encoder).search("Passwort", 1)


def test_an_english_collection_never_loads_the_multilingual_encoder(tmp_path, fake_encoder):
    named = Named()
    collection = Collection(tmp_path / "c", fake_encoder, create=True, named_encoder=named)
    collection.ingest(make_kb(tmp_path / "kb"), chunker())
    assert named.loaded == {} and collection.encoder is fake_encoder


def test_an_english_collection_can_choose_it_for_customers_who_ask_in_other_languages(tmp_path, fake_encoder):
    collection = Collection(tmp_path / "c", fake_encoder, create=True, named_encoder=Named())
    collection.ingest(make_kb(tmp_path / "kb"), chunker())
    generation = collection.store.generation
    assert collection.use_shipped_encoder(MULTILINGUAL) is True
    assert collection.store.generation == generation + 1 and collection.encoder.encoder_id == f"{MULTILINGUAL}@1"
    assert collection.stats()["encoder"] == f"{MULTILINGUAL}@1"
    assert collection.use_shipped_encoder(MULTILINGUAL) is False   # already: nothing re-embedded


def test_a_question_in_a_language_no_document_is_in_is_ranked_by_the_multilingual_encoder_alone(tmp_path, fake_encoder,
                                                                                               monkeypatch):
    lexical = []
    real = BM25Index.search
    monkeypatch.setattr(BM25Index, "search", lambda self, *a, **kw: lexical.append(a[0]) or real(self, *a, **kw))
    plain = Collection(tmp_path / "plain", fake_encoder, create=True, named_encoder=Named())
    plain.ingest(make_kb(tmp_path / "kb"), chunker())
    chosen = Collection(tmp_path / "chosen", fake_encoder, create=True, named_encoder=Named())
    chosen.use_shipped_encoder(MULTILINGUAL)
    chosen.ingest(tmp_path / "kb", chunker())
    spanish = "¿Cuánto tardan en devolverme el dinero de un reembolso?"
    chosen.search(spanish, 2)
    assert lexical == []   # BM25 cannot match Spanish words in English documents
    chosen.search("How long do refunds take?", 2)
    plain.search(spanish, 2)   # the English encoder keeps today's hybrid whatever the language
    assert lexical == ["How long do refunds take?", spanish]


def test_an_empty_collection_keeps_the_choice_for_its_first_ingest(tmp_path, fake_encoder):
    collection = Collection(tmp_path / "c", fake_encoder, create=True, named_encoder=Named())
    collection.use_shipped_encoder(MULTILINGUAL)
    collection.close()
    reopened = Collection(tmp_path / "c", fake_encoder, named_encoder=Named())
    reopened.ingest(make_kb(tmp_path / "kb"), chunker())
    assert reopened.stats()["encoder"] == f"{MULTILINGUAL}@1"


def test_cjk_runs_become_character_pairs_and_other_text_is_untouched():
    assert analysed("如何重置密码") == " 如何 何重 重置 置密 密码 "
    text = "Refunds are paid back within five days (Zürich, Ünïcödé)."
    assert analysed(text) is text
    index = BM25Index.build([1, 2, 3], ["如何重置我的密码", "如何取消订阅", "How to reset the password"])
    assert [key for key, _ in index.search("重置密码", 3)] == [1]
    assert [key for key, _ in index.search("password reset", 3)] == [3]


def test_each_language_is_stemmed_with_its_own_stemmer_and_english_terms_do_not_change():
    texts = ["Las pantallas no encienden después de la actualización", "The screens stay black after the update"]
    index = BM25Index.build([1, 2], texts, ["es", "en"])
    assert [key for key, _ in index.search("¿Por qué mi pantalla no enciende?", 2, language="es")] == [1]
    assert index.search("pantalla", 2) == []   # English analysis leaves "pantallas" and "pantalla" apart
    # English-only input gets the same terms and ids as before languages were passed.
    english = ["Refunds are paid back within five days.", "Invoices are emailed monthly."]
    plain, tagged = {}, {}
    assert [t.tolist() for t in tokenize(english, plain)] == [t.tolist() for t in tokenize(english, tagged, ["en"] * 2)]
    assert plain == tagged
    # A commit's added chunks are analysed in their languages as a fresh build would.
    grown = BM25Index.build([2], texts[1:], ["en"]).updated([], [1], texts[:1], ["es"])
    assert grown.search("pantalla", 2, language="es") == index.search("pantalla", 2, language="es")


def test_a_collection_analyses_documents_and_questions_in_their_languages(tmp_path, fake_encoder, monkeypatch):
    kb = tmp_path / "kb"
    kb.mkdir()
    (kb / "pantalla.md").write_text("# Pantallas\nLas pantallas no encienden después de la actualización del "
                                    "sistema. Reinicie el televisor y vuelva a intentarlo.")
    (kb / "factura.md").write_text("# Facturas\nLas facturas se envían por correo electrónico cada mes. Puede "
                                   "descargarlas también desde su cuenta.")
    collection = Collection(tmp_path / "c", fake_encoder, create=True, named_encoder=Named())
    declared = {"language": "es-MX"}   # a declared locale counts as its language
    collection.ingest(kb, chunker(), metadata={"pantalla.md": declared, "factura.md": declared})
    assert collection.stats()["languages"] == {"es": 2}
    assert collection.question_language("¿Por qué no se enciende mi pantalla?") == "es"
    hits = collection.search("¿Por qué no se enciende mi pantalla?", 1, mode="bm25")
    assert [h.chunk.source for h in hits] == ["pantalla.md"]
    written = collection.snapshot().bm25.main_id
    collection.close()
    # BM25 saved by a kbqa that analysed every language as English is rebuilt when the collection opens.
    monkeypatch.setattr(index_generations, "ANALYSIS", "a later analysis")
    reopened = Collection(tmp_path / "c", fake_encoder, named_encoder=Named())
    assert reopened.snapshot().bm25.main_id != written   # built again, not read back
    assert [h.chunk.source for h in reopened.search("pantalla encendida", 1, mode="bm25")] == ["pantalla.md"]


def test_kbqas_own_words_follow_the_question(tmp_path, fake_encoder):
    from serve.routes.openai_compat import reply_text
    from serve.schemas import AskResponse
    from serve.service import KbqaService
    from serve.settings import Settings
    from serve.wiring import answer_pipeline

    settings = Settings(home=tmp_path / "home", min_relevance=0.5)   # the fake encoder's buckets collide below
    service = KbqaService(settings, fake_encoder,
                          answer_pipeline(settings, generator=ScriptedGenerator("Refunds are paid back [1].")))
    service.ingest(make_kb(tmp_path / "kb"), "default")
    spanish = service.ask("¿Cuál es el precio del plan premium para empresas grandes?")
    assert spanish.abstained and spanish.language == "es" and spanish.answer == ABSTENTIONS["es"]
    english = service.ask("What does the premium plan cost for large companies?")
    assert english.abstained and english.language == "en" and english.answer == ABSTENTION
    answered = service.ask("How are refunds paid back?")
    assert answered.language == "en" and answered.citations[0].metadata["language"] == "en"
    spanish_reply = AskResponse(**{**answered.to_dict(), "language": "es"})
    assert "\n\nFuentes:\n[1]" in reply_text(spanish_reply)
    assert abstention("xx") == ABSTENTION and sources_label("ja") == "出典"


def chunker():
    from ingest.chunker import Chunker as Real

    return Real(FakeEncoder().count_tokens)


def test_a_collection_made_over_the_api_can_ask_for_the_multilingual_encoder(tmp_path, fake_encoder):
    from serve.app import create_app
    from serve.service import KbqaService
    from serve.settings import Settings
    from tests.fakes import local_client

    settings = Settings(home=tmp_path / "home")
    service = KbqaService(settings, fake_encoder, named_encoder=Named())
    with local_client(create_app(settings, service)) as client:
        made = client.post("/v1/collections", json={"name": "world", "encoder": "multilingual"})
        assert made.status_code == 201 and made.json()["encoder"] is None   # nothing embedded yet
        assert client.post("/v1/collections", json={"name": "x", "encoder": "klingon"}).status_code == 422
        page = ("---\ntitle: Zahlung\n---\nRückerstattungen werden innerhalb von fünf Tagen auf die ursprüngliche "
                "Karte zurückgezahlt.")
        sent = client.post("/v1/collections/world/documents", files=[("files", ("zahlung.md", page.encode()))])
        assert sent.status_code == 201, sent.text
        listed = {c["collection"]: c for c in client.get("/v1/collections").json()}["world"]
        assert listed["encoder"] == f"{MULTILINGUAL}@1" and listed["languages"] == {"de": 1}
        assert listed["question_languages"] == ["de"]   # none set: its documents' languages
        service.collection("world").set_question_languages(["de", "fr"])
        listed = {c["collection"]: c for c in client.get("/v1/collections").json()}["world"]
        assert listed["question_languages"] == ["de", "fr"]


def test_the_multilingual_encoders_collections_have_their_own_relevance_floor(tmp_path, fake_encoder):
    from serve.service import KbqaService
    from serve.settings import Settings
    from serve.wiring import answer_pipeline

    # Its cosines run higher than MiniLM's: the floor that lets an answer through differs (here set impossibly high).
    settings = Settings(home=tmp_path / "home", min_relevance=0.5, multilingual_min_relevance=0.999)
    service = KbqaService(settings, fake_encoder, answer_pipeline(settings, generator=ScriptedGenerator("Refunds [1].")),
                          named_encoder=Named())
    service.ingest(make_kb(tmp_path / "kb"), "plain")
    service.ingest(tmp_path / "kb", "world", encoder="multilingual")
    assert not service.ask("How are refunds paid back?", collection="plain").abstained
    assert service.ask("How are refunds paid back?", collection="world").abstained


def test_a_distilled_multilingual_encoder_reads_the_floor_through_its_own_map(tmp_path, fake_encoder):
    import json

    from retrieval.answering.cosine_scale import COLLECTION_SCALE_META, CosineScale
    from serve.service import KbqaService
    from serve.settings import Settings

    settings = Settings(home=tmp_path / "home")
    service = KbqaService(settings, fake_encoder, named_encoder=Named())
    service.ingest(make_kb(tmp_path / "kb"), "default")
    collection = service.collection("default")
    assert service.cosine_reading(collection) == (None, None)   # English: MiniLM's floor, no map
    collection.use_shipped_encoder(MULTILINGUAL)
    floor, scale = service.cosine_reading(collection)
    assert floor == settings.multilingual_min_relevance and scale is service.multilingual_scale
    # A student distilled from it spreads its cosines wider: its own map onto e5's scale is read through.
    own = CosineScale((0.4, 0.8), (0.84, 0.92))
    with collection.store.transaction():
        collection.store.set_meta(COLLECTION_SCALE_META, json.dumps({"encoder": collection.encoder.encoder_id,
                                                                     "scale": own.to_dict()}))
    floor, scale = service.cosine_reading(collection)
    assert floor == pytest.approx(0.4) and scale(0.6) == pytest.approx(service.multilingual_scale(own(0.6)))
    with collection.store.transaction():   # a map fitted for another encoder is not this one's
        collection.store.set_meta(COLLECTION_SCALE_META, json.dumps({"encoder": "other@1", "scale": own.to_dict()}))
    assert service.cosine_reading(collection)[0] == settings.multilingual_min_relevance
