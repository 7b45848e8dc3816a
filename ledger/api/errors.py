"""Errors as HTTP: each code's status, and the one error body shape."""

from __future__ import annotations

from ..domain.codes import Code

STATUS: dict[Code, int] = {
    Code.MALFORMED_BODY: 400,
    Code.UNAUTHORIZED: 401,
    Code.FORBIDDEN: 403,
    Code.ACCOUNT_NOT_FOUND: 404,
    Code.TRANSFER_NOT_FOUND: 404,
    Code.NOT_FOUND: 404,
    Code.METHOD_NOT_ALLOWED: 405,
    Code.EXISTS_WITH_DIFFERENT_FIELDS: 409,
    Code.ACCOUNT_HAS_PENDING: 409,
    Code.TRANSFER_ALREADY_POSTED: 409,
    Code.TRANSFER_ALREADY_VOIDED: 409,
    Code.TRANSFER_EXPIRED: 409,
    Code.TRANSFER_NOT_POSTED: 409,
    Code.BODY_TOO_LARGE: 413,
    Code.UNSUPPORTED_MEDIA_TYPE: 415,
    Code.NO_SIGNING_KEY: 503,
    Code.UNAVAILABLE: 503,
    Code.INTERNAL_ERROR: 500,
}
#: Every other code refuses the request's content: 422.
UNPROCESSABLE = 422


def status_of(code: Code) -> int:
    return STATUS.get(code, UNPROCESSABLE)
