"""The retry rules of DESIGN §7, row by row, as a pure function (no processes).

The same rules run end to end against real runners in test_gateway_retries.py;
here every row, and every corner (the attempt bound, no-retry, streams), is
checked in milliseconds.
"""

from __future__ import annotations

import pytest

from skyform.runtime.retry import (
    MAX_ATTEMPTS,
    Action,
    Decision,
    Outcome,
    RunnerFate,
    decide,
)

RETRY, RETURN, FAIL = Action.RETRY, Action.RETURN, Action.FAIL
KEEP, STOPPED, FAILED = RunnerFate.KEEP, RunnerFate.STOPPED, RunnerFate.FAILED

ROWS = [
    # 503: the runner is ending itself; the request goes to another runner.
    ("503", Outcome(503), Decision(RETRY, STOPPED, reason="503")),
    # 504: an upstream is unhealthy; retried, the runner kept.
    ("504", Outcome(504), Decision(RETRY, KEEP, reason="504")),
    # No answer: unreachable, or died mid-request.
    ("unreachable", Outcome(None), Decision(RETRY, FAILED, reason="unreachable")),
    # 4xx and other 5xx (and success) are the answer.
    ("200", Outcome(200), Decision(RETURN, KEEP)),
    ("400", Outcome(400), Decision(RETURN, KEEP)),
    ("404", Outcome(404), Decision(RETURN, KEEP)),
    ("422", Outcome(422), Decision(RETURN, KEEP)),
    ("500", Outcome(500), Decision(RETURN, KEEP)),
    ("502", Outcome(502), Decision(RETURN, KEEP)),
    ("500 at the bound", Outcome(500, attempts=MAX_ATTEMPTS), Decision(RETURN, KEEP)),
    # The endpoint overran request_timeout: the runner ends itself; not retried.
    (
        "504 request_timeout",
        Outcome(504, "request_timeout"),
        Decision(FAIL, STOPPED, "timeout"),
    ),
    # Silence past request_timeout: the runner is wedged; not retried.
    ("wedged", Outcome(None, timed_out=True), Decision(FAIL, FAILED, "timeout")),
    # At most MAX_ATTEMPTS attempts.
    (
        "503 at the bound",
        Outcome(503, attempts=MAX_ATTEMPTS),
        Decision(FAIL, STOPPED, "max_attempts_exceeded"),
    ),
    (
        "504 at the bound",
        Outcome(504, attempts=MAX_ATTEMPTS),
        Decision(FAIL, KEEP, "max_attempts_exceeded"),
    ),
    (
        "unreachable at the bound",
        Outcome(None, attempts=MAX_ATTEMPTS),
        Decision(FAIL, FAILED, "max_attempts_exceeded"),
    ),
    (
        "one below the bound",
        Outcome(503, attempts=MAX_ATTEMPTS - 1),
        Decision(RETRY, STOPPED, reason="503"),
    ),
    # x-skyform-no-retry: 1 — the first answer is returned; no answer fails.
    ("no-retry 503", Outcome(503, no_retry=True), Decision(RETURN, STOPPED)),
    ("no-retry 504", Outcome(504, no_retry=True), Decision(RETURN, KEEP)),
    (
        "no-retry unreachable",
        Outcome(None, no_retry=True),
        Decision(FAIL, FAILED, "runner_unavailable"),
    ),
    # A stream is retried only before its first byte.
    ("stream broke", Outcome(None, streamed=True), Decision(RETURN, FAILED)),
    ("stream ended", Outcome(200, streamed=True), Decision(RETURN, KEEP)),
    ("websocket 1013", Outcome(503, streamed=True), Decision(RETURN, STOPPED)),
]


@pytest.mark.parametrize(("outcome", "expected"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_status_table(outcome: Outcome, expected: Decision) -> None:
    assert decide(outcome) == expected


def test_ten_attempts_at_most() -> None:
    """Keep failing with 503: attempts 1..9 retry, the tenth gives up."""
    actions = [decide(Outcome(503, attempts=n)).action for n in range(1, MAX_ATTEMPTS + 1)]
    assert MAX_ATTEMPTS == 10
    assert actions == [RETRY] * 9 + [FAIL]


def test_the_bound_is_a_parameter() -> None:
    assert decide(Outcome(None, attempts=2), max_attempts=2).error_type == "max_attempts_exceeded"
    assert decide(Outcome(None, attempts=2), max_attempts=3).action is RETRY


def test_runner_fates_are_runner_states() -> None:
    """The scheduler sets a lost runner's state to its fate: the names must match."""
    assert [f.value for f in (STOPPED, FAILED)] == ["stopped", "failed"]
