"""What the evaluator decides: firings and resolutions of top-level triggers, as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

__all__ = ["EPOCH", "Firing", "Outcomes", "Resolution", "from_us", "to_us"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime (exact)."""
    return (moment - EPOCH) // _ONE_US


def from_us(us: int) -> datetime:
    """The UTC datetime of microseconds since the epoch."""
    return EPOCH + timedelta(microseconds=us)


@dataclass(slots=True, frozen=True)
class Firing:
    """A top-level trigger fired.

    ``event_id`` is the triggering event (None for a proactive key that never saw one); ``event_ids``
    are all events of the firing (the counted ones); ``processing`` is the evaluator's processing
    number of the step it happened in; ``labels`` is the ``for_each`` key (``{}`` for composites).
    """

    id: UUID
    automation_id: UUID
    trigger_path: str
    labels: dict[str, str]
    event_id: UUID | None
    event_ids: tuple[UUID, ...]
    fire_time: datetime
    processing: int
    record_key: str


@dataclass(slots=True, frozen=True)
class Resolution:
    """A fired top-level event trigger's condition cleared (``tripwire.automation.resolved``).

    ``event_id`` is the event that resolved it (proactive) or None (reactive: a quiet window passed);
    it closes ``firings`` firings of the key, the latest being ``firing_id``.
    """

    id: UUID
    automation_id: UUID
    trigger_path: str
    labels: dict[str, str]
    event_id: UUID | None
    resolve_time: datetime
    processing: int
    firing_id: UUID | None
    firings: int
    record_key: str


@dataclass(slots=True)
class Outcomes:
    """Everything one call of the evaluator produced, in the order it happened."""

    firings: list[Firing] = field(default_factory=list)
    resolutions: list[Resolution] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.firings or self.resolutions)

    def extend(self, other: Outcomes) -> None:
        """Append another call's outcomes."""
        self.firings.extend(other.firings)
        self.resolutions.extend(other.resolutions)
