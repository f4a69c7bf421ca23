"""Cursor pagination: stable under inserts and fast at any depth on millions of rows."""

from rest_framework.pagination import CursorPagination


class CreatedCursorPagination(CursorPagination):
    """Newest first; `page_size` (default 50, max 500) and an opaque `cursor`."""

    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
