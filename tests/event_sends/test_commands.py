"""`load_event_rules`: the shipped rules, installed for a client, idempotently."""

import json
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from event_sends.models import EventRule
from mailqueue.models import Client, EmailJob
from tests.event_sends.conftest import consume, publish

pytestmark = pytest.mark.django_db
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
SHIPPED = json.loads((FIXTURES / "event_rules.json").read_text())


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_every_usual_notification_type_has_a_rule_and_a_template():
    """One rule per documented event type, each naming a shipped template."""
    types = {rule["event_type"] for rule in SHIPPED}
    assert types >= {
        "user.registered",
        "booking.confirmed",
        "booking.cancelled",
        "waitlist.joined",
        "waitlist.spot_available",
        "waitlist.cancelled",
        "order.confirmed",
        "order.status_changed",
        "password.reset_requested",
        "refund.issued",
    }
    assert len(types) == len(SHIPPED)
    slugs = {path.stem for path in (FIXTURES / "templates").glob("*.json")}
    assert {rule["template"] for rule in SHIPPED} <= slugs


def test_load_event_rules_installs_them_once():
    """A second run creates nothing; another client gets its own copy."""
    run("load_default_templates")

    first = run("load_event_rules", "--client", "acme")
    second = run("load_event_rules", "--client", "acme")
    run("load_event_rules", "--client", "beta")

    assert f"{len(SHIPPED)} created" in first and "client acme created" in first
    assert "0 created" in second
    acme = Client.objects.get(name="acme")
    assert EventRule.objects.filter(client=acme).count() == len(SHIPPED)
    assert EventRule.objects.filter(client__name="beta").count() == len(SHIPPED)


def test_load_event_rules_without_templates_says_what_to_do():
    """The templates must be loaded first; nothing is half-installed."""
    with pytest.raises(CommandError, match="load_default_templates"):
        run("load_event_rules", "--client", "acme")
    assert not EventRule.objects.exists()


@pytest.mark.parametrize("rule", SHIPPED, ids=[rule["event_type"] for rule in SHIPPED])
def test_each_shipped_rule_sends_its_template_from_its_sample_context(redis, rule):
    """An event whose data is the template's sample context plus `email` becomes its email."""
    run("load_default_templates")
    run("load_event_rules", "--client", "acme")
    template = json.loads((FIXTURES / "templates" / f"{rule['template']}.json").read_text())
    data = {**template["sample_context"], "email": "ada@example.com"}
    publish(redis, {"id": "e1", "type": rule["event_type"], "client": "acme", "data": data})

    consume()

    email = EmailJob.objects.get()
    assert (email.template.slug, email.priority, email.tags) == (
        rule["template"],
        rule["priority"],
        rule["tags"],
    )
    assert redis.xlen("mailqueue:events:dead") == 0
