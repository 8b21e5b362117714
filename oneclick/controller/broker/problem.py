"""An answer of the broker other than success: a status, a message that says what to change,
and headers (Retry-After, WWW-Authenticate)."""

from __future__ import annotations

from aiohttp import web

RETRY_AFTER = "2"  # seconds, for answers that a retry may change


class Problem(Exception):
    """An answer other than success, with a message that says what to change."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}

    def response(self) -> web.Response:
        response = web.json_response({"status": self.status, "message": self.message},
                                     status=self.status, headers=self.headers)
        if self.status == 413:
            # The body was refused unread: what is left of it on the connection is no
            # request head, so the connection ends here instead of being read as one.
            response.force_close()
        return response
