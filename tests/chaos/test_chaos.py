"""The chaos scenario, short: a few hundred emails through the API while each fault happens
once (a worker SIGKILLed, all workers SIGKILLed, a scheduler SIGKILLed, Redis flushed and
restarted, PostgreSQL restarted), on private servers, with the invariants of the full run
(chaos/chaos_run.py)."""

import time

from chaos.chaos_run import run, short_scenario, summary


def test_every_email_ends_as_designed_exactly_once_through_every_fault():
    """Each email ends sent (or failed for a refused address), none early, none stuck; every
    duplicate is a kill between the SMTP server's acceptance and the commit; the API answered
    no 5xx but 503s while PostgreSQL was down; and the run stays short."""
    began = time.monotonic()
    report = run(short_scenario(emails=300))
    seconds = time.monotonic() - began
    figures = report.figures
    assert report.ok, summary(report)
    # Every fault of the plan really happened.
    assert figures["worker_kills"] == {"worker_kill": 1, "worker_group_kill": 4}, figures
    assert figures["scheduler_kills"] == 1
    faults = "\n".join(figures["faults"])
    for what in ("Redis flushed", "Redis restarted", "PostgreSQL restarted"):
        assert what in faults, faults
    # The checks saw the emails they were meant to see.
    assert figures["emails_in_database"] == 300
    assert figures["statuses"].get("failed", 0) >= 1, figures["statuses"]
    assert figures["scheduled_emails"] > 0
    assert figures["smtp_messages_received"] >= figures["statuses"]["sent"]
    # The first run after a migration changes builds the migrated-cluster cache once (chaos/
    # pgcache.py); the scenario itself must stay short.
    built = figures["setup_seconds"]["database_cache_built"]
    assert seconds - built < 60, f"took {seconds:.0f} s ({built} s cache build)\n{summary(report)}"
