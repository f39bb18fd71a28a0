"""The matching index: from an event to the event triggers that may consider it.

Two levels, both built once from the compiled automations:

1. By event name: each positive ``expect``/``after`` pattern files the trigger under its exact name,
   its literal prefix (``tripwire.flow-run.*``) or its literal suffix (``*.Failed``); a trigger with
   a pattern that has neither (or that accepts any name) goes to a bucket checked for every event.
2. Inside each name bucket, by the most selective label of ``match`` the same way (exact value,
   prefix, suffix), or a bucket for triggers without an indexable label.

Prefix and suffix lookups probe one dict per distinct length, so the cost per event grows with the
buckets the event can hit, not with the number of automations. Candidates are a superset: each
still runs its full ``classify`` (S2).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar

from triggers.compiled import EventPlan

__all__ = ["AutomationIndex"]

T = TypeVar("T")


class _AffixMap(Generic[T]):
    """Items filed by literal prefix (or suffix); ``collect`` probes once per distinct length."""

    __slots__ = ("by_affix", "lengths", "suffix")

    def __init__(self, *, suffix: bool = False) -> None:
        self.by_affix: dict[str, list[T]] = {}
        self.lengths: tuple[int, ...] = ()
        self.suffix = suffix

    def get_or_add(self, affix: str, make: type[T]) -> T:
        items = self.by_affix.get(affix)
        if items is None:
            items = self.by_affix[affix] = [make()]
            if len(affix) not in self.lengths:
                self.lengths = tuple(sorted((*self.lengths, len(affix))))
        return items[0]

    def add(self, affix: str, item: T) -> None:
        if affix not in self.by_affix:
            self.by_affix[affix] = []
            if len(affix) not in self.lengths:
                self.lengths = tuple(sorted((*self.lengths, len(affix))))
        self.by_affix[affix].append(item)

    def collect(self, value: str, out: list[T]) -> None:
        size = len(value)
        by_affix = self.by_affix
        for length in self.lengths:
            if length > size:
                break
            items = by_affix.get(value[size - length :] if self.suffix else value[:length])
            if items:
                out.extend(items)


class _LabelBuckets:
    """Plans of one name bucket, filed by one label of their ``match``."""

    __slots__ = ("always", "exact", "prefix", "suffix")

    def __init__(self) -> None:
        self.always: list[EventPlan] = []
        self.exact: dict[str, dict[str, list[EventPlan]]] = {}
        self.prefix: dict[str, _AffixMap[EventPlan]] = {}
        self.suffix: dict[str, _AffixMap[EventPlan]] = {}

    def add(self, plan: EventPlan) -> None:
        hint = plan.match.index_hint()
        if hint is None:
            self.always.append(plan)
            return
        label, keys = hint
        for kind, text in keys:
            if kind == "exact":
                self.exact.setdefault(label, {}).setdefault(text, []).append(plan)
            elif kind == "prefix":
                self.prefix.setdefault(label, _AffixMap()).add(text, plan)
            else:
                self.suffix.setdefault(label, _AffixMap(suffix=True)).add(text, plan)

    def collect(self, resource: Mapping[str, str], out: list[EventPlan]) -> None:
        if self.always:
            out.extend(self.always)
        for label, table in self.exact.items():
            value = resource.get(label)
            if value is not None:
                plans = table.get(value)
                if plans:
                    out.extend(plans)
        for affixes in (self.prefix, self.suffix):
            for label, found in affixes.items():
                value = resource.get(label)
                if value is not None:
                    found.collect(value, out)  # type: ignore[arg-type]


def _name_keys(plan: EventPlan) -> list[tuple[str, str]] | None:
    """Name keys, one of which every event name the plan considers has; None: any name."""
    if plan.expect is None:
        return None
    keys = []
    for patterns in (plan.expect, plan.after):
        if patterns is not None:
            hints = patterns.index_hint()
            if hints is None:
                return None
            keys.extend(hints)
    return keys


class AutomationIndex:
    """Maps an event (name, primary resource) to candidate event triggers, in declaration order."""

    def __init__(self, plans: Iterable[EventPlan]) -> None:
        self._exact: dict[str, _LabelBuckets] = {}
        self._prefix: _AffixMap[_LabelBuckets] = _AffixMap()
        self._suffix: _AffixMap[_LabelBuckets] = _AffixMap(suffix=True)
        self._any = _LabelBuckets()
        self.size = 0
        for plan in plans:
            self.size += 1
            keys = _name_keys(plan)
            if keys is None:
                self._any.add(plan)
                continue
            for kind, text in set(keys):
                if kind == "exact":
                    bucket = self._exact.get(text)
                    if bucket is None:
                        bucket = self._exact[text] = _LabelBuckets()
                elif kind == "prefix":
                    bucket = self._prefix.get_or_add(text, _LabelBuckets)
                else:
                    bucket = self._suffix.get_or_add(text, _LabelBuckets)
                bucket.add(plan)

    def candidates(self, name: str, resource: Mapping[str, str]) -> list[EventPlan]:
        """Event triggers that may consider an event with this name and primary resource."""
        out: list[EventPlan] = []
        bucket = self._exact.get(name)
        if bucket is not None:
            bucket.collect(resource, out)
        for affixes in (self._prefix, self._suffix):
            if affixes.lengths:
                buckets: list[_LabelBuckets] = []
                affixes.collect(name, buckets)
                for bucket in buckets:
                    bucket.collect(resource, out)
        self._any.collect(resource, out)
        if len(out) > 1:
            out = sorted(set(out), key=_ordinal)
        return out


def _ordinal(plan: EventPlan) -> int:
    return plan.ordinal
