"""SMTP submission: `manage.py smtpd` turns messages from SMTP-only tools into emails."""
