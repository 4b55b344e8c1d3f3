"""Schemathesis against the OpenAPI schema: no 5xx, and every response matches what the schema promises."""
import pytest

schemathesis = pytest.importorskip("schemathesis", reason="comes with the test extra: pip install -e '.[test]'")
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from serve.app import create_app
from serve.auth import KeyStore
from serve.service import KbqaService
from serve.wiring import answer_pipeline
from serve.settings import Settings
from tests.fakes import FakeEncoder, NamedFakes
from tests.fakes import ScriptedGenerator
from tests.fakes import make_kb


def build_app(tmp):
    """The app with one admin key (schemathesis' client is not on loopback, so keyless mode would refuse it)."""
    settings_ = Settings(home=tmp / "home", min_relevance=0.1, rate_limit_per_minute=0)
    service = KbqaService(settings_, FakeEncoder(), answer_pipeline(settings_, generator=ScriptedGenerator("Refunds are paid back within five days [1].")),
                          named_encoder=NamedFakes())   # as load_service gives one: collections may ask for it
    service.ingest(make_kb(tmp / "kb"), "default")
    key = KeyStore(settings_.kbqa_home.root / "keys.sqlite").create("fuzz", "admin")
    return create_app(settings_, service), {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    return build_app(tmp_path_factory.mktemp("fuzz"))


@pytest.fixture(scope="module")
def api_schema(api):
    from fastapi.testclient import TestClient

    app, headers = api
    with TestClient(app):  # runs the lifespan: the service and key store are in place
        yield schemathesis.openapi.from_asgi("/openapi.json", app), headers


def test_no_server_errors_and_responses_match_the_schema(api_schema):
    # Driven by hand (not @schema.parametrize): schemathesis' pytest plugin does not run under pytest 9.
    schema, headers = api_schema
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            # Every default check but positive_data_acceptance: 422 for semantically invalid data that the
            # schema cannot express (two files with one name, a collection that exists) is the right answer.
            case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

        check()
