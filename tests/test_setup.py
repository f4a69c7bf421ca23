"""Project-level checks: migrations are complete and system checks pass."""

from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_migrations_are_complete():
    """A model change without its migration fails the suite."""
    call_command("makemigrations", "--check", "--dry-run", stdout=StringIO())


def test_system_checks_pass():
    """The test settings (a provider configured, DEBUG off) pass Django's checks."""
    call_command("check", stdout=StringIO())
