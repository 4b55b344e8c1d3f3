"""The answer log into the next generator fine-tune (issue 17, 3): helpful answers and admin corrections
(PATCH /v1/feedback/{id}) become grounded training examples."""
from distill.generator_data import feedback_examples
from retrieval.answering.prompt import ABSTENTION
from serve.app import create_app
from serve.auth import KeyStore
from tests.fakes import local_client, scripted_service


def test_helpful_and_corrected_answers_become_grounded_examples(tmp_path, fake_encoder):
    service, generator = scripted_service(tmp_path, fake_encoder)
    helpful = service.ask("How are refunds paid back?")
    mixed = service.ask("When are refunds paid?")
    unrated = service.ask("How long do refunds take?")
    generator.text = ABSTENTION
    abstained = service.ask("How are invoices sent?")
    store = service.feedback
    store.add_feedback(helpful.answer_id, True)
    store.add_feedback(mixed.answer_id, True)
    store.add_feedback(mixed.answer_id, False)          # rated both ways and never corrected: not learnt
    correction = store.add_feedback(abstained.answer_id, False)
    store.correct(correction, "Invoices are emailed monthly.")
    rows = store.training_answers("default")
    assert [(r["question"], r["corrected"]) for r in rows] == [
        ("How are refunds paid back?", False), ("How are invoices sent?", True)]
    assert unrated.answer_id not in str(rows)
    examples = feedback_examples(service.collection("default"), rows, n_passages=3)
    assert len(examples) == 2
    for example, expected in zip(examples, ("Refunds are paid back within five days.", "Invoices are emailed monthly.")):
        n = int(example["target"].rsplit("[", 1)[1].rstrip("]"))
        assert expected in example["passages"][n - 1]["text"] and example["target"].startswith(expected)
    # A correction the docs do not hold cannot be taught as a grounded answer: skipped.
    store.correct(correction, "Zebras quasar moonbeam.")
    assert len(feedback_examples(service.collection("default"), store.training_answers("default"), 3)) == 1


def test_patch_feedback_stores_a_correction_for_admins_only(tmp_path, fake_encoder):
    service, _ = scripted_service(tmp_path, fake_encoder)
    with local_client(create_app(service.settings, service)) as client:
        answer = client.post("/v1/ask", json={"question": "How are refunds paid back?"}).json()
        feedback_id = client.post("/v1/feedback", json={"answer_id": answer["answer_id"], "helpful": False}).json()[
            "feedback_id"]
        assert client.patch(f"/v1/feedback/{feedback_id}", json={"corrected_answer": "Within five days."}).json() == {
            "feedback_id": feedback_id}
        assert service.feedback.training_answers("default")[0]["answer"] == "Within five days."
        assert client.patch("/v1/feedback/999", json={"corrected_answer": "x"}).status_code == 404
        assert client.patch(f"/v1/feedback/{feedback_id}", json={"corrected_answer": ""}).status_code == 422
        keys = KeyStore(tmp_path / "home" / "keys.sqlite")
        query_key = keys.create("widget", "query")
        keys.close()
        refused = client.patch(f"/v1/feedback/{feedback_id}", json={"corrected_answer": "x"},
                               headers={"Authorization": f"Bearer {query_key}"})
        assert refused.status_code == 403
