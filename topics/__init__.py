"""Topics people subscribe to, and their subscribers."""
