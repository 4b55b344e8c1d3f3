"""Content gaps (issue 17, 2): unanswered and unhelpful questions, clustered, largest first; a cluster is covered
once the docs answer it."""
import numpy as np

from retrieval.answering.prompt import ABSTENTION
from serve.app import create_app
from serve.gaps import gap_report, greedy_clusters
from tests.fakes import local_client, scripted_service

# Chosen so the test encoder's hashed words separate the three topics (cosines 0.58-0.75 within, <= 0.33 across).
APP_QUESTIONS = ["mobile app for iphone", "mobile app for android", "tablet mobile app"]
EXPORT_QUESTIONS = ["export csv file", "csv export file"]


def test_greedy_clusters_join_the_nearest_centroid_within_the_threshold():
    vectors = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.95, 0.05], [0, 0, 1]], dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert greedy_clusters(vectors, 0.8) == [[0, 1], [2, 3], [4]]
    assert greedy_clusters(vectors, 0.9999) == [[0], [1], [2], [3], [4]]


def test_report_clusters_largest_first_and_closes_a_gap_once_the_docs_answer_it(tmp_path, fake_encoder):
    service, generator = scripted_service(tmp_path, fake_encoder, ABSTENTION, min_relevance=0.0)
    for question in APP_QUESTIONS + APP_QUESTIONS[:1] + EXPORT_QUESTIONS:   # one asked twice
        assert service.ask(question).abstained
    generator.text = "Refunds are paid back within five days [1]."
    rated = service.ask("refunds paid back")
    service.feedback.add_feedback(rated.answer_id, helpful=False)
    service.ask("invite colleagues from the team settings")   # answered, never rated: no gap
    report = gap_report(service, threshold=0.4)
    assert report["questions"] == 7
    sizes = [(c["size"], c["reasons"]) for c in report["clusters"]]
    assert sizes == [(4, {"abstained": 4}), (2, {"abstained": 2}), (1, {"unhelpful": 1})]
    app = report["clusters"][0]
    assert app["representative"] in APP_QUESTIONS and sorted(app["examples"]) == sorted(APP_QUESTIONS)
    assert app["nearest_document"]["source"] in {"billing.md", "privacy.md", "faq/teams.md"}
    # The generator answers now: abstained clusters are covered; the unhelpful one still cites the rated document.
    assert [c["covered"] for c in report["clusters"]] == [True, True, False]
    generator.text = ABSTENTION
    assert not any(c["covered"] for c in gap_report(service, threshold=0.4)["clusters"])
    assert gap_report(service, since_days=1e-9)["questions"] == 0


def test_gaps_route_needs_admin_and_the_page_is_served(tmp_path, fake_encoder):
    service, _ = scripted_service(tmp_path, fake_encoder, ABSTENTION, min_relevance=0.0)
    service.ask(APP_QUESTIONS[0])
    with local_client(create_app(service.settings, service)) as client:
        body = client.get("/v1/collections/default/gaps", params={"since_days": 7}).json()
        assert body["questions"] == 1 and body["clusters"][0]["representative"] == APP_QUESTIONS[0]
        assert client.get("/v1/collections/nope/gaps").status_code == 404
        assert client.get("/v1/collections/default/gaps", params={"since_days": 0}).status_code == 422
        assert "What the docs are missing" in client.get("/gaps").text
