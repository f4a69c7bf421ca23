"""Helpers shared by the benchmark harness: processes, databases, HTTP load, reporting, and the
seeded email history of the admin benchmark."""
