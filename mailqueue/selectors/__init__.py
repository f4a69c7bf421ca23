"""Reads: one module per reader family (API emails and batches, the admin's timeline, dead
letters and dashboard). Writes live in `mailqueue.services`."""
