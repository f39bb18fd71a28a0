"""The exception tree shared by every Tripwire package.

TripwireError
├── ConfigurationError          settings that cannot work (bad URL, unreadable key file)
├── ValidationFailed            user input refused; ``errors`` lists (location, message) pairs
│   └── EventRejected           an event broke a rule or limit at intake
├── ServiceUnavailable          a dependency (Redis, the database) cannot be reached
├── NotFound                    a named object does not exist
├── Conflict                    the object is not in a state that allows it (e.g. a final flow run)
└── ActionFailed                an action failed in an expected way (recorded, not retried)
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ActionFailed",
    "ConfigurationError",
    "Conflict",
    "EventRejected",
    "NotFound",
    "ServiceUnavailable",
    "TripwireError",
    "ValidationFailed",
]


class TripwireError(Exception):
    """Root of every error Tripwire raises on purpose."""


class ConfigurationError(TripwireError):
    """The settings cannot work as given."""


class ValidationFailed(TripwireError):
    """User input was refused; ``errors`` says where and why."""

    def __init__(self, errors: Sequence[tuple[str, str]]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(f"{loc}: {msg}" if loc else msg for loc, msg in self.errors))


class EventRejected(ValidationFailed):
    """An event broke a rule or limit at intake."""


class ServiceUnavailable(TripwireError):
    """A dependency (Redis, the database) cannot be reached."""


class NotFound(TripwireError):
    """A named object does not exist."""


class Conflict(TripwireError):
    """The object exists but its state does not allow what was asked (HTTP 409)."""


class ActionFailed(TripwireError):
    """An action failed in an expected way (block missing, receiver answered 4xx, target not found).

    It is recorded with ``reason`` and not retried; any other exception raised by an action is retried.
    ``reason`` must never contain a secret.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)
