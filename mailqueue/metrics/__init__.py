"""Prometheus metrics at `GET /metrics`.

Counters and the processing-time histogram live in one Redis hash (`counters.py`), so every
worker process on every host adds to the same numbers and none needs a scrape port of its own;
`recording.py` turns outcomes, accepted emails and ESP events into increments; the gauges are
computed when Prometheus scrapes (`collector.py`), and `views.py` answers the scrape.
"""
