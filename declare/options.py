"""App options: every option an App may set, its default and its rule, defined once.

The SDK's class attributes, a stack file's app overrides, the bundle's
recorded options, the runner's timeouts, the gateway's scaling limits and
apply's wait all read their defaults and bounds from `AppOptions` here, so a
default changed in this table changes everywhere at once. Kept free of the
SDK (no App, no FastAPI): the gateway reads it without loading user code.
"""

from __future__ import annotations

from typing import Any, Literal

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, model_validator

from skyform.machines import machine_type_names


def check_runner_bounds(min_runners: int | None, max_runners: int | None) -> None:
    """The one cross-option rule: an app never keeps more warm runners than it may run."""
    if min_runners is not None and max_runners is not None and min_runners > max_runners:
        raise ValueError(f"min_runners ({min_runners}) is greater than max_runners ({max_runners})")


class AppOptions(BaseModel):
    """Every option an App (or a stack file's app entry) may set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    machine_type: str | list[str] = "CPU"
    requirements: list[str] = Field(default_factory=list)
    min_runners: int = Field(default=0, ge=0)
    max_runners: int = Field(default=1, ge=1)
    keep_alive: float = Field(default=300, ge=0)
    max_multiplexing: int = Field(default=1, ge=1)
    request_timeout: float = Field(default=120, gt=0)
    startup_timeout: float = Field(default=600, gt=0)
    auth: Literal["private", "public"] | None = None
    # Largest request body the gateway accepts for this app (MiB); bigger ones get 413.
    max_body_mb: float = Field(default=64, gt=0)

    @model_validator(mode="after")
    def _check(self) -> AppOptions:
        machine_type_names(self.machine_type)
        check_runner_bounds(self.min_runners, self.max_runners)
        return self

    @property
    def machine_types(self) -> list[str]:
        """The ordered machine-type candidates."""
        return machine_type_names(self.machine_type)


OPTION_NAMES: tuple[str, ...] = tuple(AppOptions.model_fields)
# Every option at its default: `DEFAULTS.request_timeout` is the one place 120 is written.
DEFAULTS = AppOptions()


def option_or_default(options: dict[str, Any], name: str) -> Any:
    """An option as a bundle's meta records it, else its default (older bundles lack some)."""
    value = options.get(name)
    return getattr(DEFAULTS, name) if value is None else value


def override_field(name: str, description: str | None = None) -> Any:
    """A stack-file override of option `name`: unset by default, with the option's own bounds."""
    bounds: dict[str, Any] = {}
    for rule in AppOptions.model_fields[name].metadata:
        for key in ("ge", "gt", "le", "lt"):
            if isinstance(rule, getattr(annotated_types, key.capitalize())):
                bounds[key] = getattr(rule, key)
    return Field(None, description=description, **bounds)
