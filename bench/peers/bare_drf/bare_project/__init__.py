"""The floor for POST /api/v1/emails/: one DRF view that validates a body and inserts one row.

It runs on the project's own virtualenv, so Django, DRF, psycopg and gunicorn are the very same
versions as Mailqueue's and the difference measured is Mailqueue's own request path.
"""
