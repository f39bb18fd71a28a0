"""``@flow``: a plain (sync or async) Python function run as a flow run, with states and events.

    @flow(retries=2, log_prints=True)
    def etl(day: date, limit: int = 100) -> int: ...

    etl(date(2026, 11, 21))          # runs it now: Pending, Running, Completed (engine.py)

1. Calling a sync flow runs it and returns its result, or raises its exception after reporting Failed.
   Calling an async flow returns a coroutine that does the same when awaited. No server is needed: the
   events go to the process-wide sink (``sink.py``), which delivers them when Redis is reachable.
2. Parameters are validated from the type hints by a pydantic model built once per flow: values are
   coerced (``"3"`` -> 3 for an ``int``), a bad one raises ``ValidationFailed`` at
   ``parameters.<name>``, an unknown one is refused unless the function takes ``**kwargs``. A hint
   pydantic cannot handle is treated as ``Any``; other classes are checked with ``isinstance``. The
   model's fields carry the parameter names as aliases, so a parameter may be called ``json`` or
   ``_x``. ``parameter_schema()`` is its JSON schema (what deployments show and check).
3. ``entrypoint`` is ``<absolute file path>:<qualname>`` (``module:qualname`` when the source file is
   unknown); ``load_flow`` loads both forms. A file is imported under its stem as module name (its
   directory first on ``sys.path``), so the same flow file gets the same task cache keys whether run as
   a script or by a worker.
4. Options are checked when the flow is defined (``ValidationFailed`` naming the option).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import inspect
import sys
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Generic, ParamSpec, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.json_schema import GenerateJsonSchema

from tripwire.errors import ValidationFailed
from tripwire.orchestration import engine
from tripwire.orchestration.options import Hooks, RunOptions

__all__ = ["Flow", "flow", "load_flow"]

P = ParamSpec("P")
R = TypeVar("R")


class _LenientSchema(GenerateJsonSchema):
    """JSON schema of parameters: a type with no JSON form becomes ``{}``, not an error or a warning."""

    def handle_invalid_for_json_schema(self, schema: Any, error_info: str) -> dict[str, Any]:
        return {}

    def emit_warning(self, kind: Any, detail: str) -> None:
        return None


class Flow(RunOptions, Generic[P, R]):
    """A function run as a flow run; see the module docstring."""

    def __init__(self, fn: Callable[P, R], *, name: str | None = None, description: str | None = None,
                 version: str | None = None, **options: Any) -> None:  # fmt: skip
        if not callable(fn):
            raise TypeError(f"@flow decorates a function, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or fn.__name__
        self.description = description if description is not None else inspect.getdoc(fn)
        self.version = version
        self.is_async = inspect.iscoroutinefunction(fn)
        self._options = options
        super().__init__(**options)
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]
        self._signature = inspect.signature(fn)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the flow now (module note 1)."""
        parameters = dict(self._signature.bind(*args, **kwargs).arguments)
        if self.is_async:
            return engine.run_flow_async(self, parameters)  # type: ignore[return-value]
        return engine.run_flow(self, parameters)  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"Flow({self.name!r})"

    def with_options(self, **changes: Any) -> Flow[P, R]:
        """A copy of this flow with some options changed."""
        current = {
            "name": self.name,
            "description": self.description,
            "version": self.version,
            **self._options,
        }
        return Flow(self.fn, **{**current, **changes})

    # --- parameters (note 2) -------------------------------------------------------------------------

    @functools.cached_property
    def _model(self) -> type[BaseModel]:
        try:
            hints = typing.get_type_hints(self.fn, include_extras=True)
        except Exception:  # a hint that does not resolve: take them one by one below
            hints = {}
        fields: dict[str, Any] = {}
        for i, p in enumerate(self._signature.parameters.values()):
            hint = hints.get(p.name, p.annotation)
            hint = Any if hint is inspect.Parameter.empty or isinstance(hint, str) else hint
            default = ... if p.default is inspect.Parameter.empty else p.default
            if p.kind is inspect.Parameter.VAR_POSITIONAL:
                hint, default = tuple[hint, ...], ()  # type: ignore[valid-type]
            elif p.kind is inspect.Parameter.VAR_KEYWORD:
                hint, default = dict[str, hint], {}  # type: ignore[valid-type]
            fields[f"p{i}"] = (hint, Field(default, alias=p.name))
        config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, title=self.name)
        try:
            return create_model("Parameters", __config__=config, **fields)
        except Exception:  # one hint pydantic cannot use: make that one Any
            for key, (hint, info) in list(fields.items()):
                try:
                    create_model("One", __config__=config, **{key: (hint, info)})
                except Exception:
                    fields[key] = (Any, info)
            return create_model("Parameters", __config__=config, **fields)

    def validate_parameters(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        """The parameters coerced to the function's type hints; ValidationFailed at ``parameters.<name>``."""
        names = list(self._signature.parameters)
        data = dict(parameters)
        var_kw = next((p.name for p in self._signature.parameters.values() if p.kind is p.VAR_KEYWORD), None)
        if var_kw is not None:  # names the function does not declare go to its **kwargs
            extra = {k: data.pop(k) for k in list(data) if k not in names}
            if extra:
                data[var_kw] = {**data.get(var_kw, {}), **extra}
        try:
            model = self._model.model_validate(data)
        except ValidationError as exc:
            raise ValidationFailed(self._errors(exc, names)) from None
        return {names[int(key[1:])]: getattr(model, key) for key in model.model_fields_set}

    def _errors(self, exc: ValidationError, names: list[str]) -> list[tuple[str, str]]:
        errors = []
        for err in exc.errors(include_url=False):
            loc = ".".join(str(part) for part in ("parameters", *err["loc"]))
            if err["type"] == "extra_forbidden":
                message = f"unknown parameter; {self.name} takes {', '.join(names) or 'no parameters'}"
            else:
                message = err["msg"].removeprefix("Value error, ")
            errors.append((loc, message))
        return errors

    def call_arguments(self, parameters: Mapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Positional and keyword arguments of the function for validated ``parameters``."""
        ordered = {name: parameters[name] for name in self._signature.parameters if name in parameters}
        bound = inspect.BoundArguments(self._signature, ordered)  # type: ignore[arg-type]
        return bound.args, bound.kwargs

    def parameter_schema(self) -> dict[str, Any]:
        """JSON schema of the parameters (note 2)."""
        return self._model.model_json_schema(by_alias=True, schema_generator=_LenientSchema)

    # --- where it lives (note 3) ---------------------------------------------------------------------

    @property
    def entrypoint(self) -> str:
        try:
            source = inspect.getsourcefile(self.fn)
        except TypeError:
            source = None
        if source and Path(source).is_file():
            return f"{Path(source).resolve()}:{self.fn.__qualname__}"
        return f"{self.fn.__module__}:{self.fn.__qualname__}"

    def deploy(self, name: str, **kwargs: Any) -> Any:
        """Create or update a deployment of this flow (``deployments.deploy_flow``)."""
        from tripwire.orchestration.deployments import deploy_flow  # type: ignore[import-not-found]

        return deploy_flow(self, name=name, **kwargs)


@overload
def flow(fn: Callable[P, R], /) -> Flow[P, R]: ...
@overload
def flow(
    *,
    name: str | None = ...,
    description: str | None = ...,
    version: str | None = ...,
    retries: int = ...,
    retry_delay_seconds: float | Sequence[float] = ...,
    retry_jitter_factor: float | None = ...,
    timeout_seconds: float | None = ...,
    log_prints: bool = ...,
    on_completion: Hooks = ...,
    on_failure: Hooks = ...,
    tags: Sequence[str] = ...,
) -> Callable[[Callable[P, R]], Flow[P, R]]: ...
def flow(fn: Callable[..., Any] | None = None, /, **options: Any) -> Any:
    """Make a function a flow: ``@flow`` or ``@flow(name=..., retries=..., ...)``."""
    if fn is None:
        return lambda f: Flow(f, **options)
    return Flow(fn, **options)


def load_flow(entrypoint: str) -> Flow[..., Any]:
    """The flow at ``path/to/file.py:func`` or ``package.module:func``; ValidationFailed at ``entrypoint``."""
    where, sep, qualname = entrypoint.rpartition(":")
    if not sep or not where or not qualname:
        raise ValidationFailed([("entrypoint", f"{entrypoint!r} is not <file.py or module>:<function name>")])
    try:
        module = (
            _load_file(Path(where))
            if where.endswith(".py") or "/" in where
            else importlib.import_module(where)
        )
    except ValidationFailed:
        raise
    except ModuleNotFoundError as exc:
        if exc.name and where.startswith(exc.name):
            raise ValidationFailed([("entrypoint", f"no module named {where!r}")]) from exc
        raise ValidationFailed([("entrypoint", f"importing {where} failed: {exc}")]) from exc
    except Exception as exc:
        raise ValidationFailed(
            [("entrypoint", f"importing {where} failed: {type(exc).__name__}: {exc}")]
        ) from exc
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ValidationFailed([("entrypoint", f"{where} has no {qualname!r}")])
    if not isinstance(target, Flow):
        what = f"{qualname} in {where} is a {type(target).__name__}, not a flow (decorate it with @flow)"
        raise ValidationFailed([("entrypoint", what)])
    return target


def _load_file(path: Path) -> Any:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise ValidationFailed([("entrypoint", f"no file {path}")])
    directory = str(path.parent)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    name = path.stem
    existing = sys.modules.get(name)
    if existing is not None:
        if getattr(existing, "__file__", None) and Path(existing.__file__).resolve() == path:
            return existing
        # the stem is taken by another module
        name = f"tripwire_flow_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValidationFailed([("entrypoint", f"{path} cannot be imported as Python")])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
