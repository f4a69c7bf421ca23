"""`manage.py rqworker high default low`: django-rq's command, with the checks a worker needs.

django-rq's command runs every system check before the first job, and the URL checks import
every view of the web side (the admin, the API schema, anymail's webhook views and their
signature libraries): half a second of start-up for nothing a worker uses. The model checks
and Mailqueue's own (providers, options) still run, so a misconfigured worker still refuses to
start.
"""

from django.core.checks import Tags
from django_rq.management.commands.rqworker import Command as DjangoRqWorkerCommand


class Command(DjangoRqWorkerCommand):
    """django-rq's `rqworker`, checking models and Mailqueue's configuration only."""

    requires_system_checks = [Tags.models, Tags.compatibility]
