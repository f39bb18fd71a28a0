"""Globs, pattern lists and label specs (conformance S2), compiled once.

Only ``*`` (any run of characters, possibly empty) and ``?`` (one character) are special; every other
character, ``[`` and ``]`` included, is literal. Matching is full-string and case-sensitive.
A pattern starting with ``!`` is negative.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = [
    "Glob",
    "LabelSpec",
    "PatternList",
    "literal_prefix",
    "literal_suffix",
]

_WILD = ("*", "?")


def literal_prefix(glob: str) -> str:
    """The characters of a glob before its first wildcard."""
    cut = len(glob)
    for ch in _WILD:
        pos = glob.find(ch)
        if pos != -1 and pos < cut:
            cut = pos
    return glob[:cut]


def literal_suffix(glob: str) -> str:
    """The characters of a glob after its last wildcard."""
    cut = max(glob.rfind(ch) for ch in _WILD)
    return glob[cut + 1 :]


def _regex(glob: str) -> re.Pattern[str]:
    parts = [".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in glob]
    return re.compile("".join(parts), re.DOTALL)


class Glob:
    """One compiled glob; ``match(value)`` is a plain callable chosen for speed."""

    __slots__ = ("literal", "match", "pattern", "prefix")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.prefix = literal_prefix(pattern)
        self.literal = self.prefix == pattern
        rest = pattern[len(self.prefix) :]
        self.match: Callable[[str], object]
        if self.literal:
            self.match = pattern.__eq__
        elif rest == "*":
            self.match = (lambda v, p=self.prefix: v.startswith(p)) if self.prefix else (lambda v: True)
        elif pattern.startswith("*") and not any(ch in pattern[1:] for ch in _WILD):
            self.match = lambda v, s=pattern[1:]: v.endswith(s)
        else:
            self.match = _regex(pattern).fullmatch

    def __repr__(self) -> str:
        return f"Glob({self.pattern!r})"


class PatternList:
    """Positive globs (any may match) and negative ``!globs`` (none may match) for one value."""

    __slots__ = ("_exact", "_negative", "_other", "has_positive", "patterns")

    def __init__(self, patterns: str | Iterable[str]) -> None:
        self.patterns: tuple[str, ...] = (patterns,) if isinstance(patterns, str) else tuple(patterns)
        positive = [Glob(p) for p in self.patterns if not p.startswith("!")]
        self._negative = tuple(Glob(p[1:]).match for p in self.patterns if p.startswith("!"))
        self._exact = frozenset(g.pattern for g in positive if g.literal)
        self._other = tuple(g.match for g in positive if not g.literal)
        self.has_positive = bool(positive)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, value: str | None) -> bool:
        """True when the value is present, matches a positive pattern (if any) and no negative one."""
        if value is None:
            return False
        if self.has_positive and value not in self._exact:
            for match in self._other:
                if match(value):
                    break
            else:
                return False
        for match in self._negative:
            if match(value):
                return False
        return True

    def index_hint(self) -> list[tuple[str, str]] | None:
        """Keys one of which every matching value has: ``("exact" | "prefix" | "suffix", text)``.

        None when some positive pattern has no literal prefix or suffix (or there is no positive).
        """
        if not self.has_positive:
            return None
        hints = []
        for pattern in self.patterns:
            if pattern.startswith("!"):
                continue
            glob = Glob(pattern)
            if glob.literal:
                hints.append(("exact", pattern))
            elif glob.prefix:
                hints.append(("prefix", glob.prefix))
            elif suffix := literal_suffix(pattern):
                hints.append(("suffix", suffix))
            else:
                return None
        return hints

    def __repr__(self) -> str:
        return f"PatternList({list(self.patterns)!r})"


class LabelSpec:
    """``{label: pattern | [patterns]}``: every label must be present and match its pattern list."""

    __slots__ = ("items",)

    def __init__(self, spec: Mapping[str, str | Sequence[str]]) -> None:
        self.items: tuple[tuple[str, PatternList], ...] = tuple(
            (label, PatternList(patterns)) for label, patterns in spec.items()
        )

    def __bool__(self) -> bool:
        return bool(self.items)

    def matches(self, labels: Mapping[str, str]) -> bool:
        """True when every label of the spec matches (an empty spec always matches)."""
        for label, patterns in self.items:
            if not patterns.matches(labels.get(label)):
                return False
        return True

    def matches_any(self, resources: Iterable[Mapping[str, str]]) -> bool:
        """True when one resource satisfies the whole spec (an empty spec is always satisfied)."""
        if not self.items:
            return True
        return any(self.matches(r) for r in resources)

    def index_hint(self) -> tuple[str, list[tuple[str, str]]] | None:
        """The most selective label of the spec usable by an index, with its hints, if any."""
        best: tuple[str, list[tuple[str, str]]] | None = None
        for label, patterns in self.items:
            hints = patterns.index_hint()
            if hints is None:
                continue
            if best is None or _rank(hints) < _rank(best[1]):
                best = (label, hints)
        return best

    def __repr__(self) -> str:
        return f"LabelSpec({dict((k, list(v.patterns)) for k, v in self.items)!r})"


def _rank(hints: list[tuple[str, str]]) -> int:
    """Exact values select best, then prefixes, then suffixes."""
    return max({"exact": 0, "prefix": 1, "suffix": 2}[kind] for kind, _ in hints)
