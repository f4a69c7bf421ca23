"""The OpenAPI schema tells the truth: a short schemathesis run against every API operation.

Each operation gets a bounded number of generated requests (valid and invalid ones, from a fixed
seed, so a failure reproduces) sent through the real WSGI stack to the test database and Redis.
Any 500, any status the schema does not document and any response that violates its schema
fails the test.
"""

import pytest
import schemathesis
from django.core.wsgi import get_wsgi_application
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from mailqueue.services import api_key_create
from mailqueue.services.api_keys import ALL_SCOPES

EXAMPLES_PER_OPERATION = 15

config = SchemathesisConfig.from_dict(
    {
        "seed": 20261124,
        "generation": {"max-examples": EXAMPLES_PER_OPERATION},
        "checks": {
            # A schema cannot state every rule: that a template exists, that an address passes
            # Django's validate_email, that `template` excludes `subject`. Such a request is
            # schema-valid and still a 400 naming the field; anything else stays a failure.
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "400", "401", "403", "404", "409", "429"]
            },
        },
    }
)
schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application(), config=config)


@pytest.fixture
def auth_header(db) -> dict[str, str]:
    """An Authorization header of a key with every scope, `admin` included."""
    issued = api_key_create(client_name="acme", scopes=list(ALL_SCOPES))
    return {"Authorization": f"Bearer {issued.plaintext}"}


@pytest.mark.django_db(transaction=True)
@schema.parametrize()
# One key serves every generated request of an operation: that sharing is what we want.
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_api_conforms_to_its_schema(case, auth_header):
    """Every generated request gets a documented answer in its documented shape, never a 500."""
    case.call_and_validate(headers=auth_header)
