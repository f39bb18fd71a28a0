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

__all__ = ["MalformedRequest", "PayloadTooLarge", "install_error_handlers", "parse_json", "status_for"]

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


async def _validation_failed(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationFailed)
    return JSONResponse({"detail": _detail(exc.errors)}, status_code=status_for(exc))


async def _request_validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()))
        errors.append((loc, str(err.get("msg", "invalid"))))
    return JSONResponse({"detail": _detail(errors)}, status_code=422)


async def _not_found(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def _conflict(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=409)


async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503)


async def _redis_unavailable(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("Redis error on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": f"Redis is unavailable: {type(exc).__name__}"}, status_code=503)


async def _tripwire_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error("%s on %s %s: %s", type(exc).__name__, request.method, request.url.path, exc)
    return JSONResponse({"detail": str(exc)}, status_code=500)


async def _internal(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error; the server log has the details"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers above on ``app``."""
    app.add_exception_handler(ValidationFailed, _validation_failed)
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(NotFound, _not_found)
    app.add_exception_handler(Conflict, _conflict)
    app.add_exception_handler(ServiceUnavailable, _unavailable)
    app.add_exception_handler(RedisConnectionError, _redis_unavailable)
    app.add_exception_handler(RedisTimeoutError, _redis_unavailable)
    app.add_exception_handler(TripwireError, _tripwire_error)
    app.add_exception_handler(Exception, _internal)
