"""HTTP error mapping: one JSON shape for every refusal, no stack traces or secrets in responses.

| exception | status | body |
|---|---|---|
| ``MalformedRequest`` (a ValidationFailed) | 400 | ``{"detail": [{"loc", "msg"}]}`` |
| ``PayloadTooLarge``, or an event over ``limits.max_bytes`` | 413 | same |
| ``ValidationFailed`` / ``EventRejected``, FastAPI parameter errors | 422 | same |
| ``NotFound`` | 404 | ``{"detail": "<message>"}`` |
| ``Conflict`` | 409 | same |
| ``ServiceUnavailable``, Redis connection errors | 503 | same |
| anything else | 500 | ``{"detail": "internal error ..."}`` (details only in the server log) |
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from tripwire.errors import (
    Conflict,
    EventRejected,
    NotFound,
    ServiceUnavailable,
    TripwireError,
    ValidationFailed,
)

__all__ = [
    "MalformedRequest",
    "PayloadTooLarge",
    "error_reply",
    "install_error_handlers",
    "parse_json",
    "status_for",
]

logger = logging.getLogger(__name__)

# The wording of events.model.check_limits for the size rule; such an error is a 413, not a 422.
_SIZE_ERROR = re.compile(r"\bis \d+ bytes, more than the limit \d+")


class MalformedRequest(ValidationFailed):
    """The request body cannot be read at all (malformed JSON, bad encoding): HTTP 400."""


class PayloadTooLarge(EventRejected):
    """A request or an event exceeds a size limit: HTTP 413."""


def parse_json(raw: bytes, where: str = "body") -> Any:
    """``json.loads`` that raises MalformedRequest naming the line, column and character of the problem."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedRequest([(where, f"is not valid UTF-8 (byte {exc.start})")]) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedRequest(
            [(where, f"malformed JSON at line {exc.lineno}, column {exc.colno} (char {exc.pos}): {exc.msg}")]
        ) from None


def status_for(exc: ValidationFailed) -> int:
    """400 for an unreadable body, 413 for a size limit, 422 for everything else."""
    if isinstance(exc, MalformedRequest):
        return 400
    if isinstance(exc, PayloadTooLarge) or any(_SIZE_ERROR.search(msg) for _, msg in exc.errors):
        return 413
    return 422


def _detail(errors: list[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"loc": loc, "msg": msg} for loc, msg in errors]


Reply = tuple[int, dict[str, Any]]


def _validation_failed(exc: Exception, method: str, path: str) -> Reply:
    assert isinstance(exc, ValidationFailed)
    return status_for(exc), {"detail": _detail(exc.errors)}


def _message(status: int) -> Callable[[Exception, str, str], Reply]:
    def reply(exc: Exception, method: str, path: str) -> Reply:
        return status, {"detail": str(exc)}

    return reply


def _redis_unavailable(exc: Exception, method: str, path: str) -> Reply:
    logger.warning("Redis error on %s %s: %s", method, path, exc)
    return 503, {"detail": f"Redis is unavailable: {type(exc).__name__}"}


def _tripwire_error(exc: Exception, method: str, path: str) -> Reply:
    logger.error("%s on %s %s: %s", type(exc).__name__, method, path, exc)
    return 500, {"detail": str(exc)}


def _internal(exc: Exception, method: str, path: str) -> Reply:
    logger.error("unhandled error on %s %s", method, path, exc_info=exc)
    return 500, {"detail": "internal error; the server log has the details"}


# exception class -> reply; the most specific class in an exception's MRO wins, as in Starlette.
_REPLIES: dict[type[Exception], Callable[[Exception, str, str], Reply]] = {
    ValidationFailed: _validation_failed,
    NotFound: _message(404),
    Conflict: _message(409),
    ServiceUnavailable: _message(503),
    RedisConnectionError: _redis_unavailable,
    RedisTimeoutError: _redis_unavailable,
    TripwireError: _tripwire_error,
    Exception: _internal,
}


def error_reply(exc: Exception, method: str, path: str) -> Reply:
    """The status and JSON body the handlers give ``exc``, for ASGI paths that bypass FastAPI."""
    for cls in type(exc).__mro__:
        reply = _REPLIES.get(cls)
        if reply is not None:
            return reply(exc, method, path)
    return _internal(exc, method, path)  # pragma: no cover - Exception is in every MRO above


def _handler(reply: Callable[[Exception, str, str], Reply]) -> Callable[[Request, Exception], Any]:
    async def handle(request: Request, exc: Exception) -> JSONResponse:
        status, body = reply(exc, request.method, request.url.path)
        return JSONResponse(body, status_code=status)

    return handle


async def _request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        errors.append((loc, str(err.get("msg", "invalid"))))
    return JSONResponse({"detail": _detail(errors)}, status_code=422)


def install_error_handlers(app: FastAPI) -> None:
    """Register the replies above on ``app`` (and FastAPI's parameter errors as 422)."""
    app.add_exception_handler(RequestValidationError, _request_validation)
    for cls, reply in _REPLIES.items():
        app.add_exception_handler(cls, _handler(reply))
