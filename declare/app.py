"""The user SDK: `App` and `@endpoint`.

An App is a plain class. Its body (options and method definitions) runs
locally at plan time; `setup()`, `teardown()` and endpoints run on a runner.
Mistakes are caught when the class is defined, so they surface at plan time
with a precise message rather than on a remote machine.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

from pydantic import BaseModel, ValidationError

from skyform.errors import AppDefinitionError
from skyform.options import DEFAULTS
from skyform.options import OPTION_NAMES as OPTION_NAMES  # re-exported: callers import it here
from skyform.options import AppOptions as AppOptions
from skyform.suggest import did_you_mean

F = TypeVar("F", bound=Callable[..., Any])

ENDPOINT_ATTR = "__skyform_endpoint__"


# Class attributes that look like a misspelt option are refused; anything
# further from every option name is the user's own attribute.
_MISSPELLING_CUTOFF = 0.8


@dataclass(frozen=True)
class EndpointSpec:
    """What `@endpoint` records about one method."""

    name: str
    path: str
    method: str = "POST"
    websocket: bool = False
    batch_size: int | None = None  # set: the handler takes list[In] and returns list[Out]
    batch_wait_ms: float = 0.0


def endpoint(
    path: str = "/",
    *,
    method: str = "POST",
    websocket: bool = False,
    batch_size: int | None = None,
    batch_wait_ms: float | None = None,
) -> Callable[[F], F]:
    """Expose an App method over HTTP at `path` (relative to the app's URL).

    With `websocket=True` the method is `async def f(self, ws: WebSocket)` and
    serves WebSocket connections at `path` instead.

    With `batch_size=N` the method takes `list[In]` and returns `list[Out]`
    (same order); callers still send one `In` and get one `Out`: the runner
    gathers concurrent calls into batches of up to N, waiting at most
    `batch_wait_ms` for a batch to fill (see `skyform.runtime.batching`).
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise AppDefinitionError(f'endpoint path must be a string starting with "/", got {path!r}')
    method = method.upper()
    if method not in {"POST", "GET"}:
        raise AppDefinitionError(f"endpoint method must be POST or GET, got {method!r}")
    if websocket:
        if batch_size is not None:
            raise AppDefinitionError("a websocket endpoint cannot be batched")
        method = "WEBSOCKET"
    wait_ms = _check_batching(batch_size, batch_wait_ms, method)

    def mark(func: F) -> F:
        if not callable(func):
            raise AppDefinitionError("@endpoint decorates a method")
        spec = EndpointSpec(
            func.__name__,
            _normalise_path(path),
            method,
            websocket=bool(websocket),
            batch_size=batch_size,
            batch_wait_ms=wait_ms,
        )
        setattr(func, ENDPOINT_ATTR, spec)
        return func

    return mark


def _check_batching(batch_size: int | None, batch_wait_ms: float | None, method: str) -> float:
    """Validate `@endpoint`'s batching arguments; the wait in ms (0 when not batched)."""
    if batch_size is None:
        if batch_wait_ms is not None:
            raise AppDefinitionError("batch_wait_ms needs batch_size (the most items in a batch)")
        return 0.0
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AppDefinitionError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    if method != "POST":
        raise AppDefinitionError("a batched endpoint takes a body: its method must be POST")
    wait = 10.0 if batch_wait_ms is None else batch_wait_ms
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= 60_000:
        raise AppDefinitionError(
            f"batch_wait_ms must be a number of milliseconds from 0 to 60000, got {batch_wait_ms!r}"
        )
    return float(wait)


def _normalise_path(path: str) -> str:
    stripped = "/" + path.strip("/")
    return stripped


@dataclass(frozen=True)
class Endpoint:
    """An endpoint resolved against its class: the function and its I/O types."""

    spec: EndpointSpec
    func: Callable[..., Any]
    input_model: type[BaseModel] | None
    input_name: str | None
    output_type: Any
    is_async: bool
    # "call" (one answer), "stream" (a generator: one SSE event per value) or "websocket".
    kind: str = "call"
    # The parameters after `self`, with resolved annotations: what FastAPI reads.
    parameters: tuple[inspect.Parameter, ...] = ()
    where: str = ""  # "file:line" of the method, for error messages

    @property
    def path(self) -> str:
        return self.spec.path

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def batched(self) -> bool:
        """The handler takes a list of inputs; `input_model`/`output_type` are one item's."""
        return self.spec.batch_size is not None


class App:
    """Base class of every skyform app. Subclass it; don't instantiate it yourself."""

    # The options and their defaults, from the one table (`skyform.options.AppOptions`).
    machine_type: str | list[str] = DEFAULTS.machine_type
    requirements: list[str] = list(DEFAULTS.requirements)
    min_runners: int = DEFAULTS.min_runners
    max_runners: int = DEFAULTS.max_runners
    keep_alive: float = DEFAULTS.keep_alive
    max_multiplexing: int = DEFAULTS.max_multiplexing
    request_timeout: float = DEFAULTS.request_timeout
    startup_timeout: float = DEFAULTS.startup_timeout
    auth: str | None = DEFAULTS.auth
    max_body_mb: float = DEFAULTS.max_body_mb

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            raise AppDefinitionError(
                f"{cls.__qualname__} overrides __init__; App classes are created by the runner. "
                "Put initialisation in setup(), which runs once per runner"
            )
        _check_attributes(cls)
        app_options(cls)
        app_endpoints(cls, require=False)

    def setup(self) -> None:
        """Runs once per runner, before it takes requests (load models here)."""

    def teardown(self) -> None:
        """Runs once per runner on graceful shutdown."""


def _check_attributes(cls: type) -> None:
    for name, value in cls.__dict__.items():
        if name.startswith("_") or name in OPTION_NAMES:
            continue
        if callable(value) or isinstance(value, (staticmethod, classmethod, property)):
            continue
        hint = did_you_mean(name, OPTION_NAMES, cutoff=_MISSPELLING_CUTOFF)
        if hint:
            raise AppDefinitionError(f'{cls.__qualname__}: unknown option "{name}"{hint}')


def app_options(cls: type[App], overrides: dict[str, Any] | None = None) -> AppOptions:
    """The validated options of an App class, with `overrides` (e.g. from a stack file) on top."""
    values = {name: getattr(cls, name) for name in OPTION_NAMES}
    values.update(overrides or {})
    try:
        options = AppOptions(**values)
    except ValidationError as exc:
        raise AppDefinitionError(f"{cls.__qualname__}: {_describe_validation(exc)}") from None
    except AppDefinitionError as exc:
        raise AppDefinitionError(f"{cls.__qualname__}: {exc}") from None
    _check_batch_capacity(cls, options)
    return options


def _check_batch_capacity(cls: type, options: AppOptions) -> None:
    """A batch forms from concurrent requests: a runner must take `batch_size` of them at once."""
    for name in dir(cls):
        spec: EndpointSpec | None = getattr(getattr(cls, name, None), ENDPOINT_ATTR, None)
        if spec is not None and spec.batch_size and spec.batch_size > options.max_multiplexing:
            raise AppDefinitionError(
                f"{cls.__qualname__}.{name}: batch_size ({spec.batch_size}) is greater than "
                f"max_multiplexing ({options.max_multiplexing}); a batch forms from concurrent "
                f"requests, so set max_multiplexing to at least {spec.batch_size}"
            )


def _describe_validation(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "; ".join(parts)


def app_endpoints(cls: type[App], *, require: bool = True) -> list[Endpoint]:
    """Resolve every `@endpoint` of an App class; checks signatures and unique paths."""
    found: list[Endpoint] = []
    seen: dict[tuple[str, str], str] = {}
    for name in dir(cls):
        func = getattr(cls, name, None)
        spec: EndpointSpec | None = getattr(func, ENDPOINT_ATTR, None)
        if spec is None or func is None:
            continue
        key = (spec.method, spec.path)
        if key in seen:
            raise AppDefinitionError(
                f'{cls.__qualname__}: endpoints "{seen[key]}" and "{name}" both serve '
                f"{spec.method} {spec.path}; endpoint paths must be unique"
            )
        seen[key] = name
        assert func is not None  # it carries the endpoint mark
        found.append(_resolve_endpoint(cls, spec, func))
    if require and not found:
        raise AppDefinitionError(
            f'{cls.__qualname__} has no endpoint; mark at least one method with @endpoint("/")'
        )
    found.sort(key=lambda e: (e.path, e.spec.method))
    return found


def _resolve_endpoint(cls: type, spec: EndpointSpec, func: Callable[..., Any]) -> Endpoint:
    """Check one endpoint's signature; FastAPI's own checks run when its routes are built.

    Any signature a FastAPI route accepts is allowed (a pydantic body, query and
    path parameters, `UploadFile`, `Form`, `Request`); `skyform.openapi` turns
    what FastAPI refuses into one line naming the method, file and line.
    """
    where = f"{cls.__qualname__}.{spec.name}"
    location = source_location(func)
    params = list(inspect.signature(func).parameters.values())
    if not params or params[0].name != "self":
        raise AppDefinitionError(
            f"{location}{where}: an endpoint is a method; its first parameter is self"
        )
    params = params[1:]
    try:
        hints = get_type_hints(func, include_extras=True)
    except Exception as exc:
        raise AppDefinitionError(f"{location}{where}: cannot resolve type hints: {exc}") from None
    # Carry the resolved types, not their names: under `from __future__ import
    # annotations` the names would have to be looked up again on the runner,
    # where a by-value pickle keeps only the globals the code itself uses.
    _set_annotations(func, hints)
    output_type = hints.get("return", Any)
    if spec.batch_size is not None:
        hints, output_type = _batched_types(f"{location}{where}", params, hints, output_type)
    resolved = tuple(p.replace(annotation=hints.get(p.name, p.annotation)) for p in params)
    is_gen = inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)
    kind = "websocket" if spec.websocket else "stream" if is_gen else "call"
    if kind == "websocket" and not inspect.iscoroutinefunction(func):
        raise AppDefinitionError(
            f"{location}{where}: a websocket endpoint is `async def {spec.name}(self, ws: "
            "WebSocket)`"
        )
    input_model: type[BaseModel] | None = None
    input_name: str | None = None
    models = [
        p
        for p in resolved
        if isinstance(p.annotation, type) and issubclass(p.annotation, BaseModel)
    ]
    if len(models) == 1:
        input_name, input_model = models[0].name, models[0].annotation
    return Endpoint(
        spec=spec,
        func=func,
        input_model=input_model,
        input_name=input_name,
        output_type=output_type,
        is_async=inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func),
        kind=kind,
        parameters=resolved,
        where=location,
    )


def source_location(func: Callable[..., Any]) -> str:
    """`file:line: ` of a function's definition ("" when unknown), to prefix error messages."""
    target = inspect.unwrap(getattr(func, "__func__", func))
    code = getattr(target, "__code__", None)
    if code is None:
        return ""
    return f"{code.co_filename}:{code.co_firstlineno}: "


def _batched_types(
    where: str, params: list[inspect.Parameter], hints: dict[str, Any], output: Any
) -> tuple[dict[str, Any], Any]:
    """One item's input and output types of a `list[In] -> list[Out]` batched handler."""
    if len(params) != 1:
        raise AppDefinitionError(
            f"{where}: a batched endpoint takes one argument, a list of pydantic models"
        )
    name = params[0].name
    annotation = hints.get(name)
    item = (
        get_args(annotation)[0] if get_origin(annotation) is list and get_args(annotation) else None
    )
    if not (isinstance(item, type) and issubclass(item, BaseModel)):
        raise AppDefinitionError(
            f"{where}: a batched endpoint's argument {name!r} must be annotated list[Model] "
            f"with a pydantic model, got {annotation!r}"
        )
    if output is Any or output is inspect.Signature.empty:
        return {**hints, name: item}, Any
    if get_origin(output) is not list:
        raise AppDefinitionError(
            f"{where}: a batched endpoint returns a list (one result per input), got {output!r}"
        )
    args = get_args(output)
    return {**hints, name: item}, (args[0] if args else Any)


def _set_annotations(func: Callable[..., Any], hints: dict[str, Any]) -> None:
    target = getattr(func, "__func__", func)
    if any(isinstance(v, str) for v in getattr(target, "__annotations__", {}).values()):
        target.__annotations__ = dict(hints)
