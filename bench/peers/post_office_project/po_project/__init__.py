"""A minimal Django project that sends email with django-post_office, for side-by-side numbers."""
