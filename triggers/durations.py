"""Durations in trigger fields: a number of seconds or an ISO-8601 duration such as ``"PT10M"``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator

__all__ = ["Seconds", "parse_seconds", "to_us"]

_ISO = re.compile(
    r"^P(?:(?P<w>\d+(?:\.\d+)?)W)?(?:(?P<d>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)
_UNIT_S = {"w": 604800.0, "d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_HINT = "give a number of seconds (e.g. 600) or an ISO-8601 duration (e.g. 'PT10M')"


def _parse_iso(text: str) -> float:
    found = _ISO.match(text.strip().upper())
    if found is None or text.strip().upper() in ("P", "PT") or text.strip().upper().endswith("T"):
        raise ValueError(f"{text!r} is not a duration: {_HINT}; years and months are not allowed")
    return sum(float(v) * _UNIT_S[k] for k, v in found.groupdict().items() if v is not None)


def parse_seconds(value: Any) -> float:
    """Seconds from a number, a ``timedelta`` or an ISO-8601 duration; refuses negatives and booleans."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{value!r} is not a duration: {_HINT}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        seconds = _parse_iso(value)
    else:
        raise ValueError(f"{value!r} is not a duration: {_HINT}")
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValueError(f"{value!r} is not a finite duration: {_HINT}")
    if seconds < 0:
        raise ValueError(f"must not be negative (got {value!r}); use 0 for no limit")
    return seconds


def to_us(seconds: float | None) -> int:
    """Whole microseconds of a duration in seconds (``None`` counts as 0)."""
    return 0 if seconds is None else round(seconds * 1_000_000)


Seconds = Annotated[float, BeforeValidator(parse_seconds)]
"""A non-negative duration in seconds, accepted as a number or an ISO-8601 string."""
