"""Sandboxed Jinja templates: checked when an automation is saved, rendered with limits when it runs.

1. The environment is Jinja's ``ImmutableSandboxedEnvironment`` with ``StrictUndefined`` (a missing
   variable is an error, not an empty string), autoescaping off (the output is plain text or JSON) and
   ``optimized=False``: no constant folding, so nothing a template computes runs while it is compiled —
   saving ``{{ "x" | center(10**9) }}`` costs nothing; rendering it is refused by note 2.
2. The sandbox blocks unsafe attributes but bounds neither CPU nor memory (TECHNOTES §9). While
   rendering: a deadline is checked on every call, attribute or item access, intercepted operator
   (``*``, ``**``, ``%``), step of a ``range`` and chunk of output; ``range`` yields at most
   ``max_range`` items; the output, and every string, list or mapping a call, filter or operator
   returns, is at most ``max_output_bytes``; integer arguments above that are refused before the call
   runs (so ``"x".ljust(10**9)`` never allocates), and so are ``**`` exponents above 4096 and format
   widths above the size limit. The render runs in a worker thread awaited with the deadline plus a
   grace period; the checks above stop the thread itself soon after its deadline.
3. At save time a template must compile, and may only use the context's variables (``automation``,
   ``event``, ``events``, ``labels``, ``firing``), names it defines itself, and Jinja's globals.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache, update_wrapper
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta
from jinja2.environment import Template
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "CONTEXT_VARIABLES",
    "TemplateEngine",
    "TemplateLimits",
    "TemplateRenderError",
    "check_template",
    "has_template_syntax",
]

CONTEXT_VARIABLES = ("automation", "event", "events", "labels", "firing")
"""The variables every template sees (``actions.context.template_context`` builds them)."""

MAX_EXPONENT = 4096
CACHE_SIZE = 1024
GRACE_S = 1.0
_REMOVED_GLOBALS = ("lipsum",)  # lipsum(n) writes n paragraphs: unbounded output from one call
_NUMBER = re.compile(r"\d+")
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?([-#0 +]*\d*(?:\.\d+)?)[a-zA-Z]")
_BRACE_SPEC = re.compile(r"\{[^{}:]*:([^{}]*)\}")
_PADDING_METHODS = frozenset({"ljust", "rjust", "center", "zfill", "expandtabs"})
_PADDING_FILTERS = frozenset({"center", "indent"})
_TEMPLATE_SYNTAX = ("{{", "{%", "{#")


def has_template_syntax(text: str) -> bool:
    """Whether ``text`` contains Jinja syntax (else it renders to itself)."""
    return any(mark in text for mark in _TEMPLATE_SYNTAX)


@dataclass(frozen=True, slots=True)
class TemplateLimits:
    """Bounds on one render (note 2)."""

    timeout_s: float = 2.0
    max_output_bytes: int = 64 * 1024
    max_range: int = 10_000


class TemplateRenderError(Exception):
    """A template failed while rendering: a missing variable, a sandbox refusal, a limit, a timeout."""


class _Limit(TemplateRenderError):
    """A render exceeded a limit of note 2."""


class _Guard(threading.local):
    """Per-thread render state: the deadline of the render running in this thread."""

    deadline: float | None = None


class _SandboxEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox with the checks of note 2."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, limits: TemplateLimits) -> None:
        super().__init__(undefined=StrictUndefined, autoescape=False, optimized=False)
        self.limits = limits
        self.guard = _Guard()
        for name in _REMOVED_GLOBALS:
            self.globals.pop(name, None)
        self.globals["range"] = self._range
        self.filters = {name: self._checked_filter(name, f) for name, f in self.filters.items()}

    # --- checks -------------------------------------------------------------------------------------------
    def tick(self) -> None:
        deadline = self.guard.deadline
        if deadline is not None and time.monotonic() > deadline:
            raise _Limit(f"took longer than {self.limits.timeout_s:g} s")

    def check_size(self, value: Any) -> Any:
        if isinstance(value, str | bytes | list | tuple | dict | set | frozenset):
            cap = self.limits.max_output_bytes
            if len(value) > cap:
                unit = "characters" if isinstance(value, str) else "items"
                kind = type(value).__name__
                raise _Limit(f"a {kind} of {len(value)} {unit} is larger than the limit {cap}")
        return value

    def check_width(self, values: tuple[Any, ...]) -> None:
        cap = self.limits.max_output_bytes
        for value in values:
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > cap:
                raise _Limit(f"a width of {value} is larger than the limit {cap}")

    def check_format(self, text: str) -> None:
        cap = self.limits.max_output_bytes
        for spec in _PERCENT_SPEC.findall(text) + _BRACE_SPEC.findall(text):
            for number in _NUMBER.findall(spec):
                if len(number) > 9 or int(number) > cap:
                    raise _Limit(f"a format width of {number} is larger than the limit {cap}")

    # --- sandbox hooks ------------------------------------------------------------------------------------
    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        __self.tick()
        method = getattr(__obj, "__wrapped__", __obj)
        if isinstance(getattr(method, "__self__", None), str):
            name = getattr(method, "__name__", "")
            if name in _PADDING_METHODS:
                __self.check_width((*args, *kwargs.values()))
            elif name in ("format", "format_map"):
                __self.check_format(method.__self__)  # "{:>999999}".format(x)
        return __self.check_size(super().call(__context, __obj, *args, **kwargs))

    def getattr(self, obj: Any, attribute: str) -> Any:
        self.tick()
        return self.check_size(super().getattr(obj, attribute))

    def getitem(self, obj: Any, argument: Any) -> Any:
        self.tick()
        return self.check_size(super().getitem(obj, argument))

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        self.tick()
        if operator == "**" and isinstance(right, int) and right > MAX_EXPONENT:
            raise _Limit(f"an exponent of {right} is larger than the limit {MAX_EXPONENT}")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if hasattr(seq, "__len__") and isinstance(times, int):
                    self.check_size(range(len(seq) * max(times, 0)))
        if operator == "%" and isinstance(left, str):
            self.check_format(left)
            if "*" in left:
                self.check_width(right if isinstance(right, tuple) else (right,))
        return self.check_size(super().call_binop(context, operator, left, right))

    def _range(self, *args: int) -> _TickingRange:
        numbers = range(*args)
        if len(numbers) > self.limits.max_range:
            raise _Limit(f"range of {len(numbers)} items is larger than the limit {self.limits.max_range}")
        return _TickingRange(numbers, self.tick)

    def _checked_filter(self, name: str, f: Callable[..., Any]) -> Callable[..., Any]:
        def checked(*args: Any, **kwargs: Any) -> Any:
            self.tick()
            if name in _PADDING_FILTERS:
                self.check_width((*args[1:], *kwargs.values()))
            elif name == "format" and args and isinstance(args[0], str):
                self.check_format(args[0])
            return self.check_size(f(*args, **kwargs))

        return update_wrapper(checked, f)  # keeps jinja_pass_arg (pass_context and friends)


class _TickingRange:
    """A range whose iteration checks the render deadline at every step."""

    __slots__ = ("_numbers", "_tick")

    def __init__(self, numbers: range, tick: Callable[[], None]) -> None:
        self._numbers = numbers
        self._tick = tick

    def __iter__(self) -> Iterator[int]:
        for n in self._numbers:
            self._tick()
            yield n

    def __len__(self) -> int:
        return len(self._numbers)

    def __getitem__(self, index: Any) -> Any:
        return self._numbers[index]

    def __contains__(self, value: object) -> bool:
        return value in self._numbers

    def __reversed__(self) -> Iterator[int]:
        return iter(_TickingRange(self._numbers[::-1], self._tick))

    def __repr__(self) -> str:
        return repr(self._numbers)


def _syntax_message(exc: TemplateSyntaxError) -> str:
    return f"template syntax error at line {exc.lineno}: {exc.message}"


def check_template(source: str) -> str:
    """``source`` if it compiles and uses only known variables; ValueError with line and message if not."""
    problem = _template_problem(source)
    if problem is not None:
        raise ValueError(problem)
    return source


@lru_cache(maxsize=4096)
def _template_problem(source: str) -> str | None:
    """What is wrong with a template, or None; cached (a pure function of the source): every load of a
    stored automation validates its templates again, and compiling one costs ~0.5 ms."""
    if not has_template_syntax(source):
        return None
    env = _SandboxEnvironment(TemplateLimits())
    try:
        ast = env.parse(source)
        env.compile(ast)
    except TemplateSyntaxError as exc:
        return _syntax_message(exc)
    known = set(CONTEXT_VARIABLES) | set(env.globals)
    unknown = sorted(meta.find_undeclared_variables(ast) - known)
    if unknown:
        names = ", ".join(repr(n) for n in unknown)
        return f"template uses unknown variable {names}; templates see {', '.join(CONTEXT_VARIABLES)}"
    return None


class TemplateEngine:
    """Compiles templates (cached by source) and renders them in a worker thread within the limits."""

    def __init__(self, limits: TemplateLimits | None = None) -> None:
        self.limits = limits or TemplateLimits()
        self._env = _SandboxEnvironment(self.limits)
        self._cache: OrderedDict[str, Template] = OrderedDict()
        self._lock = threading.Lock()

    def compile(self, source: str) -> Template:
        """The compiled template; ValueError with line and message when it does not compile."""
        with self._lock:
            template = self._cache.get(source)
            if template is not None:
                self._cache.move_to_end(source)
                return template
        try:
            template = self._env.from_string(source)
        except TemplateSyntaxError as exc:
            raise ValueError(_syntax_message(exc)) from None
        with self._lock:
            self._cache[source] = template
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return template

    def render_sync(self, source: str, context: Mapping[str, Any]) -> str:
        """Render in this thread within the limits; TemplateRenderError saying what went wrong."""
        if not has_template_syntax(source):
            return self._checked_output(source)
        try:
            template = self.compile(source)
        except ValueError as exc:
            raise TemplateRenderError(str(exc)) from None
        guard = self._env.guard
        guard.deadline = time.monotonic() + self.limits.timeout_s
        cap = self.limits.max_output_bytes
        parts: list[str] = []
        size = 0
        try:
            for chunk in template.generate(dict(context)):
                self._env.tick()
                size += len(chunk.encode())
                if size > cap:
                    raise _Limit(f"output is larger than the limit of {cap} bytes")
                parts.append(chunk)
        except TemplateRenderError:
            raise
        except TemplateError as exc:
            raise TemplateRenderError(_render_message(exc)) from None
        except Exception as exc:  # the template's own errors: 1/0, int("x"), a refused call
            raise TemplateRenderError(f"{type(exc).__name__}: {exc}") from None
        finally:
            guard.deadline = None
        return "".join(parts)

    async def render(self, source: str, context: Mapping[str, Any]) -> str:
        """Render in a worker thread, waiting at most the render timeout (plus a grace period)."""
        if not has_template_syntax(source):
            return self._checked_output(source)
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self.render_sync, source, context), self.limits.timeout_s + GRACE_S
            )
        except TimeoutError:
            raise TemplateRenderError(f"took longer than {self.limits.timeout_s:g} s") from None

    def _checked_output(self, text: str) -> str:
        if len(text.encode()) > self.limits.max_output_bytes:
            cap = self.limits.max_output_bytes
            raise TemplateRenderError(f"output is larger than the limit of {cap} bytes")
        return text


def _render_message(exc: TemplateError) -> str:
    message = exc.message or type(exc).__name__
    lineno = getattr(exc, "lineno", None)
    return f"line {lineno}: {message}" if lineno else message
