"""One-time codes sent by email and verified through the API."""
