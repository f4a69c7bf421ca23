"""The circuit breaker scenario, short: the primary provider (a local fake of Postmark's API)
answers 503 for a few seconds under load, with a one-second open time, on private servers
(chaos/breaker_failover.py runs the full minute)."""

import json
import subprocess
import sys
import time
from pathlib import Path

from chaos.breaker_failover import HANDFUL, PRIMARY, SECONDARY

ROOT = Path(__file__).resolve().parents[2]


def test_the_secondary_carries_the_mail_while_the_primary_fails_and_nothing_is_lost(tmp_path):
    """While the primary fails, its circuit opens, the SMTP secondary carries every email, few
    calls reach the primary, and once it recovers one probe brings the mail back to it; no
    email is lost or delivered twice."""
    figures_file = tmp_path / "figures.json"
    began = time.monotonic()
    # Its own process: the scenario configures Django for its private servers.
    run = subprocess.run(
        [sys.executable, "-m", "chaos.breaker_failover", "--rate", "10", "--before", "1.5",
         "--outage", "4", "--after", "3", "--cooldown", "1", "--workers", "2",
         "--json", str(figures_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )  # fmt: skip
    seconds = time.monotonic() - began
    assert figures_file.exists(), run.stdout + run.stderr
    figures = json.loads(figures_file.read_text())
    shown = run.stdout

    assert figures["emails"] >= 70, shown
    assert figures["statuses"] == {"sent": figures["emails"]}, shown
    assert figures["lost"] == 0, shown
    assert figures["duplicated"] == 0, shown
    carried = figures["carried"]
    assert carried["before"][PRIMARY] > 0 and carried["before"][SECONDARY] == 0, shown
    assert carried["during"][SECONDARY] > 0 and carried["during"][PRIMARY] == 0, shown
    assert carried["after"][PRIMARY] > 0, shown
    assert figures["openings"] >= 1, shown
    assert figures["calls_while_open"] <= HANDFUL, shown
    assert 1 <= figures["probes"] <= figures["openings"] + HANDFUL, shown
    assert figures["back_to_primary_seconds"] is not None, shown
    assert figures["back_to_primary_seconds"] <= 4, shown
    assert figures["ok"], shown
    assert run.returncode == 0, shown
    # The machine is shared with other test runs: generous, but a hang still fails.
    assert seconds < 120, f"took {seconds:.0f} s"
