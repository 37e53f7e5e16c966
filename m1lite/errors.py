"""The error hierarchy and the one JSON error shape every endpoint uses.

Every error a client sees is `{"status": N, "message": "...", "error": "short_code"}`.
Handlers raise an `ApiError` subclass; the app turns it into that body.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec


class ApiError(Exception):
    """An error a client is allowed to see; carries its HTTP status and short code."""

    status: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    # Sent as Retry-After with a 429 or 503.
    retry_after_s: int = 1

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]

    def body(self) -> bytes:
        return error_body(self.status, self.message, self.code)


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class PayloadTooLarge(ApiError):
    status = 413
    code = "too_large"


class TooManyRequests(ApiError):
    status = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, code: str | None = None, retry_after_s: int = 1) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = max(1, retry_after_s)


class Unavailable(ApiError):
    status = 503
    code = "unavailable"


class StorageFull(ApiError):
    status = 507
    code = "storage_full"


_encoder = msgspec.json.Encoder()


def error_body(status: int, message: str, code: str) -> bytes:
    return _encoder.encode({"status": status, "message": message, "error": code})
