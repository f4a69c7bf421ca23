"""Helpers shared by the benchmark harness: processes, databases, HTTP load, reporting."""
