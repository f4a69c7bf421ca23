"""The post_office peer's bench commands."""
