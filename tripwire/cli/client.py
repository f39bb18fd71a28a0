"""A small synchronous client for the Tripwire HTTP API, with errors a person can act on."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from tripwire.errors import TripwireError, ValidationFailed
from tripwire.settings import Settings

__all__ = ["ApiClient", "ApiError", "SseEvent", "cli_errors", "error_lines", "fail"]

P = ParamSpec("P")
R = TypeVar("R")


class ApiError(TripwireError):
    """The API could not be reached or refused a request; ``details`` lists one line per problem."""

    def __init__(self, message: str, details: list[str] | None = None, status: int | None = None) -> None:
        self.message = message
        self.details = details or []
        self.status = status
        super().__init__("\n".join([message, *self.details]))


class SseEvent:
    """One server-sent event: its ``event`` type, ``data`` text and ``id``."""

    __slots__ = ("data", "event", "id")

    def __init__(self, event: str, data: str, id: str | None) -> None:
        self.event = event
        self.data = data
        self.id = id

    def json(self) -> Any:
        return json.loads(self.data)


def _loc(loc: Any) -> str:
    if isinstance(loc, list | tuple):
        parts = [str(p) for p in loc]
        if parts and parts[0] in ("body", "query", "path", "header"):
            parts = parts[1:]
        return ".".join(parts)
    return str(loc or "")


def error_lines(body: Any) -> list[str]:
    """``field: message`` lines from an error body (FastAPI's ``detail`` list, or ``errors`` pairs)."""
    detail = body.get("detail", body.get("errors")) if isinstance(body, dict) else body
    if isinstance(detail, dict):
        detail = detail.get("errors", detail.get("message", detail))
    if isinstance(detail, list):
        lines = []
        for item in detail:
            if isinstance(item, dict):
                loc = _loc(item.get("loc", item.get("field", item.get("location"))))
                msg = str(item.get("msg", item.get("message", item)))
                lines.append(f"{loc}: {msg}" if loc else msg)
            elif isinstance(item, list | tuple) and len(item) == 2:
                lines.append(f"{item[0]}: {item[1]}" if item[0] else str(item[1]))
            else:
                lines.append(str(item))
        return lines
    return [str(detail)] if detail not in (None, "") else []


class ApiClient:
    """Talks to the API at ``settings.api_url``, sending ``settings.api_key`` as a bearer token."""

    def __init__(self, settings: Settings, *, timeout_s: float = 10.0) -> None:
        self.base_url = settings.api_url.rstrip("/")
        headers = {"Accept": "application/json"}
        if settings.api_key is not None:
            headers["Authorization"] = f"Bearer {settings.api_key.get_secret_value()}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _unreachable(self, exc: Exception) -> ApiError:
        return ApiError(
            f"cannot reach the Tripwire API at {self.base_url} — start it with `tripwire server start` "
            f"or set TRIPWIRE_API_URL ({type(exc).__name__}: {exc})"
        )

    def _check(self, response: httpx.Response) -> None:
        if response.is_success:
            return
        try:
            body: Any = response.json()
        except ValueError:
            body = response.text.strip()[:500]
        lines = error_lines(body)
        status = response.status_code
        if status == 401:
            hint = "set TRIPWIRE_API_KEY to the server's key"
            raise ApiError(f"the API refused the request (401 unauthorized): {hint}", lines, status)
        if status == 422:
            raise ApiError("the API rejected the request (422):", lines, status)
        what = f"{response.request.method} {response.request.url.path}"
        raise ApiError(f"{what} failed with {status} {response.reason_phrase}", lines, status)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; return the JSON body (None when empty) or raise ApiError."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        self._check(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            return response.text

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, json=body)

    def stream_events(self, path: str, **params: Any) -> Iterator[SseEvent]:
        """Follow a server-sent-events endpoint until the server closes it."""
        query = {k: v for k, v in params.items() if v is not None}
        try:
            with self._http.stream(
                "GET", path, params=query, headers={"Accept": "text/event-stream"},
                timeout=httpx.Timeout(10.0, read=None),
            ) as response:  # fmt: skip
                if not response.is_success:
                    response.read()
                    self._check(response)
                yield from _parse_sse(response.iter_lines())
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc


def _parse_sse(lines: Iterator[str]) -> Iterator[SseEvent]:
    event, data, last_id = "message", [], None
    for line in lines:
        if not line:
            if data:
                yield SseEvent(event, "\n".join(data), last_id)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            last_id = value
    if data:
        yield SseEvent(event, "\n".join(data), last_id)


def fail(message: str, details: list[str] | None = None) -> typer.Exit:
    """Print an error in red on stderr (one line, then one per detail) and return the exit to raise."""
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(f"[bold red]error:[/] [red]{escape(message)}[/]")
    for line in details or []:
        console.print(f"  [red]{escape(line)}[/]")
    return typer.Exit(1)


def cli_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn Tripwire errors raised by a command into a red message and exit code 1, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            raise fail(exc.message, exc.details) from None
        except ValidationFailed as exc:
            raise fail("rejected:", [f"{loc}: {msg}" if loc else msg for loc, msg in exc.errors]) from None
        except ValidationError as exc:
            details = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)]
            raise fail("invalid settings or input:", details) from None
        except TripwireError as exc:
            raise fail(str(exc)) from None

    return wrapper
