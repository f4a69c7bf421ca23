"""Emails triggered by events other services publish to Redis."""
