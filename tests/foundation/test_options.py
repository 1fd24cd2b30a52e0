"""App options are defined once: every reader takes its defaults and bounds from one table."""

from __future__ import annotations

from typing import Any

import annotated_types
import pytest
from pydantic import ValidationError

from skyform import App, endpoint
from skyform.app import app_options
from skyform.engine.stackfile import AppEntry
from skyform.options import DEFAULTS, OPTION_NAMES, AppOptions, option_or_default
from skyform.runtime.gateway_scheduler import AppLimits

# The one option a stack file cannot override (a gateway-side body limit set in code).
NOT_IN_STACK_FILE = {"max_body_mb"}


def _bounded() -> list[tuple[str, str, Any]]:
    """(option, rule, bound) for every numeric bound in the table."""
    out = []
    for name, info in AppOptions.model_fields.items():
        for rule in info.metadata:
            for key in ("ge", "gt"):
                if isinstance(rule, getattr(annotated_types, key.capitalize())):
                    out.append((name, key, getattr(rule, key)))
    return out


BOUNDED = _bounded()


def test_the_table_has_the_documented_defaults() -> None:
    # DESIGN §2's example values are the defaults users rely on.
    assert DEFAULTS.request_timeout == 120
    assert DEFAULTS.startup_timeout == 600
    assert DEFAULTS.keep_alive == 300
    assert (DEFAULTS.min_runners, DEFAULTS.max_runners, DEFAULTS.max_multiplexing) == (0, 1, 1)
    assert {n for n, _, _ in BOUNDED} >= {"min_runners", "keep_alive", "request_timeout"}


def test_sdk_class_attributes_are_the_table_defaults() -> None:
    class Bare(App):
        @endpoint("/")
        def ping(self) -> dict:
            return {}

    for name in OPTION_NAMES:
        assert getattr(App, name) == getattr(DEFAULTS, name), name
    assert app_options(Bare) == DEFAULTS
    assert App.requirements is not DEFAULTS.requirements  # a user appending cannot edit the table


def test_gateway_limits_default_to_the_table_and_read_the_bundle() -> None:
    limits = AppLimits.of({"options": {}})
    for name, value in limits.__dict__.items():
        assert value == getattr(DEFAULTS, name), name
    assert AppLimits.of({}) == limits  # a meta without options at all
    set_ = AppLimits.of({"options": {"keep_alive": 5, "max_runners": 3, "request_timeout": None}})
    assert (set_.keep_alive, set_.max_runners) == (5.0, 3)
    assert set_.request_timeout == float(DEFAULTS.request_timeout)


def test_option_or_default() -> None:
    assert option_or_default({}, "startup_timeout") == DEFAULTS.startup_timeout
    assert option_or_default({"startup_timeout": None}, "startup_timeout") == 600
    assert option_or_default({"startup_timeout": 7}, "startup_timeout") == 7


def test_stack_file_overrides_cover_the_options() -> None:
    overridable = set(OPTION_NAMES) - NOT_IN_STACK_FILE
    assert overridable <= set(AppEntry.model_fields)
    assert not NOT_IN_STACK_FILE & set(AppEntry.model_fields)
    entry = AppEntry(app="a.py::A")
    assert entry.overrides() == {}  # unset overrides leave the class's values


@pytest.mark.parametrize(("name", "rule", "bound"), BOUNDED, ids=[b[0] for b in BOUNDED])
def test_stack_file_and_sdk_share_each_bound(name: str, rule: str, bound: Any) -> None:
    """The value the App refuses the stack file refuses too, and the edge both accept alike."""
    bad = bound - 1 if rule == "ge" else bound
    with pytest.raises(ValidationError):
        AppOptions(**{name: bad})
    if name in NOT_IN_STACK_FILE:
        return
    with pytest.raises(ValidationError) as info:
        AppEntry(app="a.py::A", **{name: bad})
    assert info.value.errors()[0]["loc"] == (name,)
    good = bound if rule == "ge" else bound + 0.5
    assert getattr(AppOptions(**{name: good}), name) == good
    assert AppEntry(app="a.py::A", **{name: good}).overrides()[name] == good


def test_min_above_max_is_one_rule_in_both() -> None:
    with pytest.raises(ValidationError, match=r"min_runners \(3\) is greater than max_runners"):
        AppOptions(min_runners=3, max_runners=2)
    with pytest.raises(ValidationError, match=r"min_runners \(3\) is greater than max_runners"):
        AppEntry(app="a.py::A", min_runners=3, max_runners=2)
