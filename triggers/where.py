"""``where`` predicates: jsonpaths over the event JSON with operators (conformance S2), compiled once.

Notes (TECHNOTES §4): parsing costs ~0.5 ms, so a clause is parsed when the automation is validated
and never per event; deprecated jsonpath syntax is refused rather than warned about; jsonpath-ng's
``find`` can raise on odd data (an index into an object), so simple paths (``$``, ``.name``,
``['name']``, ``[n]``, ``[*]``) are walked here and anything else falls back to ``find`` guarded.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from jsonpath_ng import jsonpath as jp
from jsonpath_ng.ext import parse as jsonpath_parse

__all__ = ["OPERATORS", "WhereClause", "json_equal"]

OPERATORS = ("eq", "ne", "gt", "ge", "lt", "le", "in", "not_in", "contains", "regex", "exists")
_OPS_TEXT = ", ".join(OPERATORS)

Selector = Callable[[Any], list[Any]]
Test = Callable[[Any], bool]


def json_equal(a: Any, b: Any) -> bool:
    """JSON equality: ``1 == 1.0``, but ``true`` is not ``1`` and ``"1"`` is not ``1``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if type(a) is not type(b) and not (isinstance(a, str) and isinstance(b, str)):
        return False
    return bool(a == b)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _comparable(a: Any, b: Any) -> bool:
    return (_is_number(a) and _is_number(b)) or (isinstance(a, str) and isinstance(b, str))


def _steps(expr: Any) -> list[Any] | None:
    """The simple steps of a parsed path, or None when it needs jsonpath-ng's own ``find``."""
    if isinstance(expr, jp.Root):
        return []
    if isinstance(expr, jp.Child):
        left = _steps(expr.left)
        right = _steps(expr.right)
        return None if left is None or right is None else left + right
    if isinstance(expr, jp.Fields) and "*" not in expr.fields:
        return [("fields", expr.fields)]
    if isinstance(expr, jp.Index):
        return [("index", expr.indices)]
    if type(expr) is jp.Slice and expr.start is None and expr.end is None and expr.step is None:
        return [("all", None)]
    return None


def _walk(steps: list[Any]) -> Selector:
    def select(doc: Any) -> list[Any]:
        values = [doc]
        for kind, arg in steps:
            out: list[Any] = []
            for v in values:
                if kind == "fields":
                    if isinstance(v, dict):
                        out.extend(v[name] for name in arg if name in v)
                elif kind == "index":
                    if isinstance(v, list):
                        out.extend(v[i] for i in arg if -len(v) <= i < len(v))
                elif isinstance(v, list):
                    out.extend(v)
                elif v is not None:
                    out.append(v)  # jsonpath-ng treats a non-list as a one-element list for [*]
            values = out
            if not values:
                break
        return values

    return select


def _finder(expr: Any) -> Selector:
    def select(doc: Any) -> list[Any]:
        try:
            return [m.value for m in expr.find(doc)]
        except Exception:  # jsonpath-ng raises on some shapes of data; that selects nothing
            return []

    return select


def _compile_path(path: str) -> Selector:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            expr = jsonpath_parse(path)
        except DeprecationWarning as exc:
            raise ValueError(f"{path!r} uses deprecated jsonpath syntax ({exc}); rewrite it") from None
        except Exception as exc:
            raise ValueError(
                f"{path!r} is not a valid jsonpath ({exc}); write a path such as '$.payload.status'"
            ) from None
    steps = _steps(expr)
    return _walk(steps) if steps is not None else _finder(expr)


def _value_test(op: str, arg: Any, where: str) -> Test:
    if op == "eq":
        return lambda v: json_equal(v, arg)
    if op == "ne":
        return lambda v: not json_equal(v, arg)
    if op in ("gt", "ge", "lt", "le"):
        if not (_is_number(arg) or isinstance(arg, str)):
            raise ValueError(f"{where}: '{op}' needs a number or a string, not {arg!r}")
        compare = {
            "gt": lambda v: v > arg,
            "ge": lambda v: v >= arg,
            "lt": lambda v: v < arg,
            "le": lambda v: v <= arg,
        }[op]
        return lambda v: _comparable(v, arg) and compare(v)
    if op in ("in", "not_in"):
        if not isinstance(arg, list):
            raise ValueError(f"{where}: '{op}' needs a list of values, not {arg!r}")
        if op == "in":
            return lambda v: any(json_equal(v, x) for x in arg)
        return lambda v: not any(json_equal(v, x) for x in arg)
    if op == "contains":
        return lambda v: (
            (isinstance(v, str) and isinstance(arg, str) and arg in v)
            or (isinstance(v, list) and any(json_equal(x, arg) for x in v))
        )
    if op == "regex":
        if not isinstance(arg, str):
            raise ValueError(f"{where}: 'regex' needs a string pattern, not {arg!r}")
        try:
            search = re.compile(arg).search
        except re.error as exc:
            raise ValueError(f"{where}: regex {arg!r} does not compile ({exc}); fix the pattern") from None
        return lambda v: isinstance(v, str) and search(v) is not None
    raise ValueError(f"{where}: unknown operator {op!r}; use one of {_OPS_TEXT}")


class _Predicate:
    __slots__ = ("exists", "select", "tests")

    def __init__(self, path: str, spec: Any) -> None:
        where = f"where[{path!r}]"
        self.select = _compile_path(path)
        self.exists: bool | None = None
        tests: list[Test] = []
        if isinstance(spec, Mapping):
            if not spec:
                raise ValueError(f"{where}: the operator object is empty; give at least one of {_OPS_TEXT}")
            for op, arg in spec.items():
                if op == "exists":
                    if not isinstance(arg, bool):
                        raise ValueError(f"{where}: 'exists' needs true or false, not {arg!r}")
                    self.exists = arg
                else:
                    tests.append(_value_test(op, arg, where))
        else:
            tests.append(_value_test("eq", spec, where))
        self.tests = tuple(tests)

    def holds(self, doc: Any) -> bool:
        values = self.select(doc)
        if self.exists is not None and bool(values) != self.exists:
            return False
        if not self.tests:
            return True
        tests = self.tests
        return any(all(t(v) for t in tests) for v in values)


class WhereClause:
    """Every entry must hold; one selected value must satisfy all value operators of an entry."""

    __slots__ = ("_predicates", "spec")

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.spec = dict(spec)
        self._predicates = tuple(_Predicate(path, pred) for path, pred in spec.items())

    def __bool__(self) -> bool:
        return bool(self._predicates)

    def matches(self, doc: Any) -> bool:
        """True when every predicate holds for the event JSON ``doc``."""
        for predicate in self._predicates:
            if not predicate.holds(doc):
                return False
        return True
