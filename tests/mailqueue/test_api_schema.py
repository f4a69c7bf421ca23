"""The OpenAPI schema tells the truth: schemathesis against every API operation.

Each operation gets a bounded number of generated requests (valid and invalid ones, from a fixed
seed, so a failure reproduces) sent through the real WSGI stack to the test database and Redis:
with a key that has every scope, and without a valid key (no Authorization header, an unknown
key, a malformed header, another scheme, in turn). Any 5xx, any status the schema does not
document and any response that violates its schema fails the test; without a valid key every
answer must be the documented 401.

FUZZ_EXAMPLES sets the examples per operation (15 here; `make fuzz` runs 500), FUZZ_SEED the
seed, and FUZZ_OPERATIONS (a regular expression over "METHOD /path") the operations to run.
"""

import itertools
import os
from urllib.parse import unquote, urlsplit

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.urls import Resolver404, resolve
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from mailqueue.services import api_key_create
from mailqueue.services.api_keys import ALL_SCOPES

EXAMPLES_PER_OPERATION = int(os.environ.get("FUZZ_EXAMPLES") or 15)
SEED = int(os.environ.get("FUZZ_SEED") or 20261124)


def _schema(expected_statuses: list[str], examples: int) -> schemathesis.schemas.BaseSchema:
    """The live schema, loaded through the WSGI app, with its own positive-data expectation."""
    config = SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {"max-examples": examples},
            "checks": {"positive_data_acceptance": {"expected-statuses": expected_statuses}},
        }
    )
    loaded = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application(), config=config)
    # FUZZ_OPERATIONS="POST /api/v1/(emails|batches)/$" fuzzes only the operations it matches.
    if only := os.environ.get("FUZZ_OPERATIONS"):
        loaded = loaded.include(name_regex=only)
    return loaded


# A schema cannot state every rule: that a template exists, that an address passes Django's
# validate_email, that `template` excludes `subject`. Such a request is schema-valid and still a
# 400 naming the field; anything else stays a failure.
schema = _schema(["2xx", "400", "401", "403", "404", "409", "429"], EXAMPLES_PER_OPERATION)
# Without a valid key the only right answer to a schema-valid request is 401. The key is checked
# before the body is read, so a third of the examples (at least one per kind of bad key) do.
UNAUTHENTICATED_EXAMPLES = max(4, EXAMPLES_PER_OPERATION // 3)
unauthenticated_schema = _schema(["401"], UNAUTHENTICATED_EXAMPLES)
# A @settings decorator's values override schemathesis's config, and it inherits the loaded
# Hypothesis profile's max_examples: each test states its own count.
SETTINGS = {"deadline": None, "suppress_health_check": [HealthCheck.function_scoped_fixture]}

# What a caller without a valid key may send: nothing, an unknown key, a header in the wrong
# form, a scheme other than Bearer. Each generated request takes the next one in turn, so every
# operation meets all four.
BAD_CREDENTIALS = itertools.cycle(
    [
        {},
        {"Authorization": "Bearer mq_nosuchkey_0123456789abcdef0123456789abcdef"},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWRhOnNlY3JldA=="},
    ]
)


@pytest.fixture
def auth_header(db) -> dict[str, str]:
    """An Authorization header of a key with every scope, `admin` included."""
    issued = api_key_create(client_name="acme", scopes=list(ALL_SCOPES))
    return {"Authorization": f"Bearer {issued.plaintext}"}


@pytest.mark.django_db(transaction=True)
@schema.parametrize()
# One key serves every generated request of an operation: that sharing is what we want.
@settings(max_examples=EXAMPLES_PER_OPERATION, **SETTINGS)
def test_api_conforms_to_its_schema(case, auth_header):
    """Every generated request gets a documented answer in its documented shape, never a 5xx."""
    case.call_and_validate(headers=auth_header)


@pytest.fixture
def connection_kept_across_requests():
    """The WSGI handler closes the database connection around each request (as in production),
    which would end the test's transaction; Django's own test client stops that the same way."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.mark.django_db
@unauthenticated_schema.parametrize()
@settings(max_examples=UNAUTHENTICATED_EXAMPLES, **SETTINGS)
def test_api_without_a_valid_key_answers_401(case, connection_kept_across_requests):
    """Without a valid key every operation answers a documented 401, whatever the request."""
    credentials = next(BAD_CREDENTIALS)
    # The generator may add an Authorization header of its own: the bad one replaces it.
    case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    response = case.call_and_validate(headers=credentials)

    path = unquote(urlsplit(response.request.url).path)
    try:
        resolve(path)
    except Resolver404:
        # A generated path parameter no route takes (`/emails/null/`): no such resource.
        assert response.status_code == 404, (case.method, path, response.status_code)
        return
    assert response.status_code == 401, (case.method, path, credentials, response.status_code)
    assert response.headers["www-authenticate"] == ['Bearer realm="api"']
