"""The gateway's retry rules (DESIGN §7) as one pure function: outcome in, decision out.

Kept apart from the scheduler so that the status table can be read in one
place and tested without processes: the scheduler reports how an attempt
ended (`Outcome`), `decide` says what follows (`Decision`), and the scheduler
carries it out (stop the runner, requeue the request, or complete it).

| outcome                                   | runner    | request                      |
|-------------------------------------------|-----------|------------------------------|
| 503                                       | stopped   | retried on another runner    |
| 504                                       | kept      | retried                      |
| 504 with error type `request_timeout`     | stopped   | fails: `timeout`             |
| unreachable / died mid-request            | failed    | retried                      |
| no answer past request_timeout (wedged)   | failed    | fails: `timeout`             |
| 4xx, other 5xx, 2xx                       | kept      | returned as it is            |
| any retry at `MAX_ATTEMPTS` attempts      | as above  | fails: `max_attempts_exceeded` |
| retry with `x-skyform-no-retry: 1`        | as above  | answer returned as it is; no answer fails: `runner_unavailable` |
| after the stream's first byte             | as above  | returned as it is (never retried) |
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MAX_ATTEMPTS = 10


class Action(StrEnum):
    """What happens to the request."""

    RETRY = "retry"  # back to the head of the queue, for whichever runner is free
    RETURN = "return"  # the runner's answer goes to the caller as it is
    FAIL = "fail"  # the gateway fails the request with `Decision.error_type`


class RunnerFate(StrEnum):
    """What happens to the runner that served the attempt (values are runner states)."""

    KEEP = "ready"
    STOPPED = "stopped"  # it is ending itself (503, overran request_timeout)
    FAILED = "failed"  # lost: unreachable, died or wedged


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended, as the scheduler saw it."""

    status: int | None = None  # the runner's status code; None: no answer at all
    error_type: str | None = None  # the runner's error-type header, if any
    timed_out: bool = False  # no answer (not even a 504) past request_timeout
    attempts: int = 1  # attempts so far, this one included
    no_retry: bool = False  # `x-skyform-no-retry: 1`
    streamed: bool = False  # bytes already reached the caller (a stream, a websocket)


@dataclass(frozen=True)
class Decision:
    action: Action
    runner: RunnerFate = RunnerFate.KEEP
    error_type: str | None = None  # for FAIL
    reason: str = ""  # for RETRY: the retry metric's label ("503", "504", "unreachable")


def decide(outcome: Outcome, max_attempts: int = MAX_ATTEMPTS) -> Decision:
    """The DESIGN §7 status table: what follows an attempt that ended as `outcome`."""
    status = outcome.status
    if status is None:
        fate = RunnerFate.FAILED
    elif status == 503 or (status == 504 and outcome.error_type == "request_timeout"):
        fate = RunnerFate.STOPPED
    else:
        fate = RunnerFate.KEEP
    if outcome.streamed:
        return Decision(Action.RETURN, fate)
    if status is None and outcome.timed_out:
        # Silence past the runner's own 504 means it is wedged; running the
        # request again would wedge the next one.
        return Decision(Action.FAIL, fate, "timeout")
    if status == 504 and outcome.error_type == "request_timeout":
        # The endpoint itself overran request_timeout: it would overrun again.
        return Decision(Action.FAIL, fate, "timeout")
    if status is not None and status not in (503, 504):
        return Decision(Action.RETURN, fate)
    if outcome.no_retry:
        if status is None:
            return Decision(Action.FAIL, fate, "runner_unavailable")
        return Decision(Action.RETURN, fate)
    if outcome.attempts >= max_attempts:
        return Decision(Action.FAIL, fate, "max_attempts_exceeded")
    return Decision(Action.RETRY, fate, reason="unreachable" if status is None else str(status))
