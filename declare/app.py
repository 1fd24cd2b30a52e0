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
from typing import Any, Literal, TypeVar, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from skyform.errors import AppDefinitionError
from skyform.machines import machine_type_names
from skyform.suggest import did_you_mean

F = TypeVar("F", bound=Callable[..., Any])

ENDPOINT_ATTR = "__skyform_endpoint__"


class AppOptions(BaseModel):
    """Every option an App (or a stack file's app entry) may set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    machine_type: str | list[str] = "CPU"
    requirements: list[str] = Field(default_factory=list)
    min_runners: int = Field(0, ge=0)
    max_runners: int = Field(1, ge=1)
    keep_alive: float = Field(300, ge=0)
    max_multiplexing: int = Field(1, ge=1)
    request_timeout: float = Field(120, gt=0)
    startup_timeout: float = Field(600, gt=0)
    auth: Literal["private", "public"] | None = None

    @model_validator(mode="after")
    def _check(self) -> AppOptions:
        machine_type_names(self.machine_type)
        if self.min_runners > self.max_runners:
            raise ValueError(
                f"min_runners ({self.min_runners}) is greater than max_runners ({self.max_runners})"
            )
        return self

    @property
    def machine_types(self) -> list[str]:
        """The ordered machine-type candidates."""
        return machine_type_names(self.machine_type)


OPTION_NAMES: tuple[str, ...] = tuple(AppOptions.model_fields)
# Class attributes that look like a misspelt option are refused; anything
# further from every option name is the user's own attribute.
_MISSPELLING_CUTOFF = 0.8


@dataclass(frozen=True)
class EndpointSpec:
    """What `@endpoint` records about one method."""

    name: str
    path: str
    method: str = "POST"


def endpoint(path: str = "/", *, method: str = "POST") -> Callable[[F], F]:
    """Expose an App method over HTTP at `path` (relative to the app's URL)."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise AppDefinitionError(f'endpoint path must be a string starting with "/", got {path!r}')
    method = method.upper()
    if method not in {"POST", "GET"}:
        raise AppDefinitionError(f"endpoint method must be POST or GET, got {method!r}")

    def mark(func: F) -> F:
        if not callable(func):
            raise AppDefinitionError("@endpoint decorates a method")
        setattr(func, ENDPOINT_ATTR, EndpointSpec(func.__name__, _normalise_path(path), method))
        return func

    return mark


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

    @property
    def path(self) -> str:
        return self.spec.path

    @property
    def name(self) -> str:
        return self.spec.name


class App:
    """Base class of every skyform app. Subclass it; don't instantiate it yourself."""

    machine_type: str | list[str] = "CPU"
    requirements: list[str] = []
    min_runners: int = 0
    max_runners: int = 1
    keep_alive: float = 300
    max_multiplexing: int = 1
    request_timeout: float = 120
    startup_timeout: float = 600
    auth: str | None = None

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
        return AppOptions(**values)
    except ValidationError as exc:
        raise AppDefinitionError(f"{cls.__qualname__}: {_describe_validation(exc)}") from None
    except AppDefinitionError as exc:
        raise AppDefinitionError(f"{cls.__qualname__}: {exc}") from None


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
        found.append(_resolve_endpoint(cls, spec, func))
    if require and not found:
        raise AppDefinitionError(
            f'{cls.__qualname__} has no endpoint; mark at least one method with @endpoint("/")'
        )
    found.sort(key=lambda e: (e.path, e.spec.method))
    return found


def _resolve_endpoint(cls: type, spec: EndpointSpec, func: Callable[..., Any]) -> Endpoint:
    where = f"{cls.__qualname__}.{spec.name}"
    params = list(inspect.signature(func).parameters.values())
    if not params or params[0].name != "self":
        raise AppDefinitionError(f"{where}: an endpoint is a method; its first parameter is self")
    params = params[1:]
    if len(params) > 1:
        raise AppDefinitionError(
            f"{where}: an endpoint takes at most one argument (a pydantic model), "
            f"got {len(params)}: {', '.join(p.name for p in params)}"
        )
    try:
        hints = get_type_hints(func)
    except Exception as exc:
        raise AppDefinitionError(f"{where}: cannot resolve type hints: {exc}") from None
    # Carry the resolved types, not their names: under `from __future__ import
    # annotations` the names would have to be looked up again on the runner,
    # where a by-value pickle keeps only the globals the code itself uses.
    _set_annotations(func, hints)
    input_model: type[BaseModel] | None = None
    input_name: str | None = None
    if params:
        input_name = params[0].name
        annotation = hints.get(input_name)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            raise AppDefinitionError(
                f"{where}: argument {input_name!r} must be annotated with a pydantic model, "
                f"got {annotation!r}"
            )
        input_model = annotation
    return Endpoint(
        spec=spec,
        func=func,
        input_model=input_model,
        input_name=input_name,
        output_type=hints.get("return", Any),
        is_async=inspect.iscoroutinefunction(func),
    )


def _set_annotations(func: Callable[..., Any], hints: dict[str, Any]) -> None:
    target = getattr(func, "__func__", func)
    if any(isinstance(v, str) for v in getattr(target, "__annotations__", {}).values()):
        target.__annotations__ = dict(hints)
