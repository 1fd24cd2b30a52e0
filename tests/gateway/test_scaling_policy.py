"""The scaling rules of DESIGN §7 as pure functions: runners and queue in, decision out.

No process starts and nothing sleeps: the runners are the scheduler's own
model objects in chosen states. The same rules run end to end against real
runners in test_gateway_scaling.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from skyform.runtime.gateway_model import AppLimits, Runner, RunnerState
from skyform.runtime.scaling import (
    BACKOFF_MAX_S,
    START_FAILURE_LIMIT,
    ScaleUp,
    gives_up,
    idle_to_stop,
    pick,
    scale_up,
    start_backoff,
    to_drain,
)

NEW, OLD = "gen-new", "gen-old"
B, S, R, D = RunnerState.BUILDING, RunnerState.STARTING, RunnerState.READY, RunnerState.DRAINING
NOW = 1000.0


def runner(
    state: RunnerState = R,
    in_flight: int = 0,
    generation: str = NEW,
    idle_since: float = NOW,
    hints: tuple[str, ...] = (),
    name: str = "",
) -> Runner:
    r = Runner(
        id=name or f"r-{state}-{in_flight}-{generation}-{idle_since}",
        app="app",
        revision=generation,
        generation=generation,
        state=state,
        started=0.0,
        in_flight=in_flight,
        idle_since=idle_since,
    )
    r.hints = dict.fromkeys(hints)
    return r


def limits(**kw: Any) -> AppLimits:
    base: dict[str, Any] = {"min_runners": 0, "max_runners": 4, "max_multiplexing": 1}
    return AppLimits(**{**base, "keep_alive": 300.0, **kw})


# --- scale up -------------------------------------------------------------

# (id, runners, queued, limits, expected number of runners to start)
SCALE_ROWS = [
    ("idle app, nothing queued: nothing starts", [], 0, {}, 0),
    ("scale from zero on the first request", [], 1, {}, 1),
    ("a burst starts one runner per queued request", [], 3, {}, 3),
    ("never above max_runners", [], 10, {"max_runners": 4}, 4),
    ("max_runners counts running ones", [runner(R, 1), runner(R, 1)], 10, {}, 2),
    ("max_multiplexing: one runner takes 4", [], 4, {"max_multiplexing": 4}, 1),
    ("max_multiplexing: 5 need two", [], 5, {"max_multiplexing": 4}, 2),
    ("a runner starting covers its slots", [runner(S)], 1, {}, 0),
    ("a building runner covers its slots too", [runner(B)], 1, {}, 0),
    ("queued work beyond booting capacity", [runner(S)], 3, {}, 2),
    ("busy ready runners do not cover the queue", [runner(R, 1)], 1, {}, 1),
    ("min_runners kept warm with nothing queued", [], 0, {"min_runners": 2}, 2),
    ("min_runners already met", [runner(R), runner(R)], 0, {"min_runners": 2}, 0),
    ("draining runners count for nothing", [runner(D)], 1, {}, 1),
    ("failed runners count for nothing", [runner(RunnerState.FAILED)], 1, {}, 1),
    # Rolling revision: as many new runners as the outdated ones serving.
    ("new revision replaces outdated runners", [runner(R, 0, OLD), runner(R, 0, OLD)], 0, {}, 2),
    ("rollout already started", [runner(R, 0, OLD), runner(S)], 0, {}, 0),
    ("rollout within max_runners", [runner(R, 0, OLD)] * 3, 0, {"max_runners": 2}, 2),
]


@pytest.mark.parametrize(
    ("runners", "queued", "kw", "expected"),
    [r[1:] for r in SCALE_ROWS],
    ids=[r[0] for r in SCALE_ROWS],
)
def test_scale_up(runners: list[Runner], queued: int, kw: dict[str, Any], expected: int) -> None:
    assert scale_up(runners, NEW, queued, limits(**kw), NOW).count == expected


def test_scale_up_waits_out_a_start_backoff() -> None:
    assert scale_up([], NEW, 1, limits(), NOW, next_start_at=NOW + 2.0) == ScaleUp(1, 2.0)
    assert scale_up([], NEW, 1, limits(), NOW, next_start_at=NOW - 1.0) == ScaleUp(1, 0.0)
    # Nothing wanted: no wait either.
    assert scale_up([], NEW, 0, limits(), NOW, next_start_at=NOW + 2.0) == ScaleUp()


# --- idle stop --------------------------------------------------------------

KEEP = 300.0
LONG_IDLE, FRESH = NOW - KEEP - 1, NOW - 1


def test_idle_past_keep_alive_stops() -> None:
    idle, busy, fresh = runner(idle_since=LONG_IDLE), runner(in_flight=1), runner(idle_since=FRESH)
    assert idle_to_stop([idle, busy, fresh], NEW, 0, limits(keep_alive=KEEP), NOW) == [idle]


def test_idle_exactly_keep_alive_stops() -> None:
    r = runner(idle_since=NOW - KEEP)
    assert idle_to_stop([r], NEW, 0, limits(keep_alive=KEEP), NOW) == [r]


def test_never_below_min_runners_longest_idle_first() -> None:
    a, b, c = (runner(idle_since=LONG_IDLE - i, name=f"r{i}") for i in range(3))
    got = idle_to_stop([a, b, c], NEW, 0, limits(keep_alive=KEEP, min_runners=1), NOW)
    assert got == [c, b]


def test_min_runners_counts_runners_still_starting() -> None:
    idle = runner(idle_since=LONG_IDLE)
    got = idle_to_stop([idle, runner(S)], NEW, 0, limits(keep_alive=KEEP, min_runners=1), NOW)
    assert got == [idle]
    assert idle_to_stop([idle], NEW, 0, limits(keep_alive=KEEP, min_runners=1), NOW) == []


def test_nothing_stops_while_requests_wait() -> None:
    assert idle_to_stop([runner(idle_since=LONG_IDLE)], NEW, 1, limits(keep_alive=KEEP), NOW) == []


def test_outdated_runners_are_not_stopped_for_idleness() -> None:
    """They drain when the new revision is ready (to_drain), not by keep_alive."""
    old = runner(generation=OLD, idle_since=LONG_IDLE)
    assert idle_to_stop([old], NEW, 0, limits(keep_alive=KEEP), NOW) == []


# --- rolling revisions ------------------------------------------------------


def test_rolling_drains_every_outdated_active_runner() -> None:
    old_ready, old_booting = runner(R, generation=OLD), runner(S, generation=OLD)
    old_gone = runner(RunnerState.STOPPED, generation=OLD)
    new = runner(R)
    assert to_drain([old_ready, old_booting, old_gone, new], NEW) == [old_ready, old_booting]


# --- which runner serves ----------------------------------------------------


def test_pick_least_busy_of_the_current_generation() -> None:
    busy, calm = runner(in_flight=2, name="busy"), runner(in_flight=1, name="calm")
    assert pick([busy, calm], NEW, slots=4) is calm


def test_pick_skips_full_and_unready_runners() -> None:
    assert pick([runner(in_flight=1), runner(S), runner(D)], NEW, slots=1) is None


def test_pick_prefers_new_generation_and_falls_back_to_outdated() -> None:
    old, new = runner(generation=OLD), runner(in_flight=3)
    assert pick([old, new], NEW, slots=4) is new
    assert pick([old, runner(in_flight=4)], NEW, slots=4) is old


def test_pick_sticks_to_the_hinted_runner() -> None:
    calm, hinted = runner(name="calm"), runner(in_flight=2, hints=("h",), name="hinted")
    assert pick([calm, hinted], NEW, slots=4, hint="h") is hinted
    assert pick([calm, hinted], NEW, slots=4, hint="other") is calm
    assert pick([calm, runner(in_flight=4, hints=("h",))], NEW, slots=4, hint="h") is calm


# --- failed starts ------------------------------------------------------------


def test_backoff_doubles_up_to_a_cap() -> None:
    delays = [start_backoff(n) for n in range(1, 12)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays == sorted(delays) and delays[-1] == BACKOFF_MAX_S


def test_queued_requests_fail_after_a_bound_of_failed_starts() -> None:
    assert START_FAILURE_LIMIT == 3
    assert [gives_up(n, "startup_failed") for n in (1, 2, 3, 4)] == [False, False, True, True]


def test_an_environment_build_failure_gives_up_at_once() -> None:
    assert gives_up(1, "environment_build_failed")
