"""The gateway's scaling rules (DESIGN §7) as pure functions of an app's runners and queue.

Kept apart from the scheduler (which starts, polls and stops runners) so that
each rule can be read on its own and tested without processes or sleeps:
given the app's limits, its runners (state, in-flight, idle since,
generation) and its queue, each function says what to do; the scheduler
does it.

- `pick`: which ready runner takes the next request (the hint's runner, else
  the least busy of the current generation, else an outdated one still serving).
- `scale_up`: how many runners to start: enough for the queued work that the
  runners already starting cannot take (`max_multiplexing` each), never fewer
  than `min_runners` nor than the outdated runners a rollout replaces, never
  more than `max_runners`; after a failed start, not before its backoff.
- `idle_to_stop`: which runners sat idle past `keep_alive` (never below
  `min_runners`, never while requests wait).
- `to_drain`: once a runner of the new generation is ready, every outdated one.
- `start_backoff` / `gives_up`: how long after a failed start the next one
  waits, and when the queued requests fail instead of waiting.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .gateway_model import ACTIVE, AppLimits, Runner, RunnerState

START_FAILURE_LIMIT = 3
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0


@dataclass(frozen=True)
class ScaleUp:
    """Start `count` runners, `after` seconds from now (0: at once)."""

    count: int = 0
    after: float = 0.0


def pick(
    runners: Iterable[Runner], generation: str, slots: int, hint: str | None = None
) -> Runner | None:
    """The ready runner with a free slot that should take the next request, if any."""
    best: Runner | None = None
    fallback: Runner | None = None
    for r in runners:
        if r.state != RunnerState.READY or r.in_flight >= slots:
            continue
        if hint is not None and hint in r.hints and r.generation == generation:
            return r  # sticky: a free runner that served this hint before
        if r.generation == generation:
            if best is None or r.in_flight < best.in_flight:
                best = r
        elif fallback is None or r.in_flight < fallback.in_flight:
            fallback = r
    return best or fallback


def scale_up(
    runners: Iterable[Runner],
    generation: str,
    queued: int,
    limits: AppLimits,
    now: float,
    next_start_at: float = 0.0,
) -> ScaleUp:
    """How many runners to start for `queued` waiting requests (`now`: monotonic time)."""
    slots = limits.max_multiplexing
    current = booting = outdated = 0
    for r in runners:
        if r.state in ACTIVE:
            if r.generation != generation:
                outdated += 1
            else:
                current += 1
                booting += r.state != RunnerState.READY
    waiting = queued - booting * slots
    target = current + (-(-waiting // slots) if waiting > 0 else 0)
    target = min(max(target, limits.min_runners, outdated), limits.max_runners)
    missing = target - current
    if missing <= 0:
        return ScaleUp()
    return ScaleUp(missing, max(0.0, next_start_at - now))


def idle_to_stop(
    runners: Iterable[Runner], generation: str, queued: int, limits: AppLimits, now: float
) -> list[Runner]:
    """The runners idle past `keep_alive` to stop now, longest idle first."""
    every = list(runners)
    current = sum(1 for r in every if r.generation == generation and r.state in ACTIVE)
    idle = sorted(
        (
            r
            for r in every
            if r.state == RunnerState.READY
            and r.generation == generation
            and r.in_flight == 0
            and now - r.idle_since >= limits.keep_alive
        ),
        key=lambda r: r.idle_since,
    )
    stop: list[Runner] = []
    for r in idle:
        if current <= limits.min_runners or queued:
            break
        current -= 1
        stop.append(r)
    return stop


def to_drain(runners: Iterable[Runner], generation: str) -> list[Runner]:
    """Rolling revision: once one runner of `generation` is ready, the outdated ones to drain."""
    return [r for r in runners if r.generation != generation and r.state in ACTIVE]


def start_backoff(failures: int) -> float:
    """Seconds to wait before the next start after `failures` failed starts in a row."""
    return min(BACKOFF_BASE_S * 2 ** (failures - 1), BACKOFF_MAX_S)


def gives_up(failures: int, error_type: str) -> bool:
    """Whether queued requests fail now rather than wait for another start.

    An environment build failure would fail the same way again; anything else
    gets `START_FAILURE_LIMIT` tries in a row.
    """
    return error_type == "environment_build_failed" or failures >= START_FAILURE_LIMIT
