"""Settings of a Django project that sends its mail through a Mailqueue service.

Only these lines differ from an SMTP-sending project: the backend and its two settings (given
by the test that runs this project, through the environment).
"""

import os

SECRET_KEY = "client-tests-django-project"
INSTALLED_APPS: list[str] = []
USE_TZ = True

EMAIL_BACKEND = "mailqueue_client.django.EmailBackend"
MAILQUEUE_URL = os.environ["MAILQUEUE_URL"]
MAILQUEUE_API_KEY = os.environ["MAILQUEUE_API_KEY"]
MAILQUEUE_TIMEOUT = 10

DEFAULT_FROM_EMAIL = "Acme <hello@example.com>"
SERVER_EMAIL = "root@example.com"
ADMINS = [("Admin", "admin@example.com")]
