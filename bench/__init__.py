"""Benchmarks: numbers printed side by side with peers, never asserted (see bench/README.md)."""
