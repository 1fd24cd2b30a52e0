"""What fal's clients expect of the gateway's wire format (DESIGN §7, fal wire compatibility).

Kept apart from the routes so the gateway's hot path only calls in here for
fal-specific pieces: stack-qualified app ids, the queue status object, the
request headers fal-client sends (`X-Fal-Request-Timeout`, `X-Fal-Runner-Hint`)
and the status stream.
"""

from __future__ import annotations

import math
from typing import Any

REQUEST_TIMEOUT_HEADER = b"x-fal-request-timeout"
RUNNER_HINT_HEADER = b"x-fal-runner-hint"
# Sent with a 504 for a request that did not start in time: fal-client does not
# retry a 504 that carries it ("honour user defined timeouts").
TIMEOUT_TYPE_HEADER = (b"x-fal-request-timeout-type", b"user")
ERROR_TYPE_HEADER = b"x-fal-error-type"
MAX_HINT = 256


class FalHeaderError(ValueError):
    """A fal request header the gateway cannot honour (answered 400)."""


def split_app(path: str, stack: str, apps: Any) -> tuple[str, str, str]:
    """`(app, rest, prefix)` for `path` = "APP/rest" or "STACK/APP/rest" (fal's owner/alias).

    The stack-qualified form wins when its second segment names an app;
    `prefix` is what the caller used ("APP" or "STACK/APP"), so that the URLs
    the gateway hands back keep the caller's form.
    """
    name, _, rest = path.partition("/")
    if name == stack and rest:
        second, _, tail = rest.partition("/")
        if second in apps:
            return second, tail, f"{stack}/{second}"
    return name, rest, name


def request_timeout(value: str | None) -> float | None:
    """Seconds from `X-Fal-Request-Timeout` (None when absent)."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise FalHeaderError(
            f"X-Fal-Request-Timeout must be a number of seconds, got {value!r}"
        ) from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise FalHeaderError(f"X-Fal-Request-Timeout must be a positive number, got {value!r}")
    return seconds


def runner_hint(value: str | None) -> str | None:
    """The `X-Fal-Runner-Hint`, checked for length (None when absent or empty)."""
    if not value:
        return None
    if len(value) > MAX_HINT:
        raise FalHeaderError(f"X-Fal-Runner-Hint is longer than {MAX_HINT} characters")
    return value


def wants_logs(query: dict[str, list[str]]) -> bool:
    """`?logs=1` or `?logs=true` (fal-client sends Python's `True`, as "true")."""
    value = (query.get("logs") or [""])[-1].strip().lower()
    return value in ("1", "true", "yes")


def metrics(created: float, started: float | None, completed: float | None) -> dict[str, float]:
    """A completed request's `metrics`: fal's `inference_time`, plus where the time went."""
    if started is None or completed is None:
        return {}
    run = round(completed - started, 6)
    return {
        "inference_time": run,
        "queue_seconds": round(started - created, 6),
        "run_seconds": run,
    }


def sse_event(data: bytes) -> bytes:
    """One server-sent event carrying `data` (JSON on one line)."""
    return b"data: " + data + b"\n\n"
