"""Cursor pagination of a room's messages for the REST API: newest first, stable under new messages."""

from rest_framework.pagination import CursorPagination


class MessageCursorPagination(CursorPagination):
    # Message ids are unique and only grow, so a cursor on them never skips or repeats a message,
    # however many arrive while a client pages back through the history.
    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    # A page is one query and one response: at most as many as load_history's limit.
    max_page_size = 100
