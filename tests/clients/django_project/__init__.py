"""A separate Django project whose EMAIL_BACKEND is the Mailqueue client's backend."""
