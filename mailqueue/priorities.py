"""The priority names, which are also the RQ queue names, highest first.

This module imports nothing from Django: `config/settings.py` builds RQ_QUEUES from it before
any app is loaded. Everywhere else, use the enum `mailqueue.models.Priority`, whose values are
these names.
"""

HIGH = "high"
DEFAULT = "default"
LOW = "low"

# Workers drain the queues in this order (the documented command is `rqworker high default low`).
QUEUE_NAMES = (HIGH, DEFAULT, LOW)

# Not a priority: deliveries of outbound webhooks. The worker class serves this queue right
# after `high` (see mailqueue/worker.py), so `rqworker high default low` stays the command.
WEBHOOKS = "webhooks"
# The order a worker serves its queues in.
SERVED_ORDER = (HIGH, WEBHOOKS, DEFAULT, LOW)
