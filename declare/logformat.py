"""The one shape of a runner log line, shared by the runner that writes it and the gateway that reads it.

`2026-12-01T17:00:00.123Z INFO skyform.runner [REQUEST_ID] message`: a UTC
time to the millisecond (sortable as text, so the lines of many runners merge
by time), the level, the logger (or `stdout`/`stderr` for what the App
prints), the request id (`-` outside a request) and the message.
"""

from __future__ import annotations

import re
import time

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
NO_REQUEST = "-"

LINE_RE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (?P<level>[A-Z]+) (?P<logger>\S+) "
    r"\[(?P<request_id>[^\]]*)\] (?P<message>.*)$"
)


def utc_stamp(when: float | None = None) -> str:
    """`when` (default: now) as the log lines' time, e.g. `2026-12-01T17:00:00.123Z`."""
    now = time.time() if when is None else when
    return time.strftime(TIME_FORMAT, time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"


def log_line(logger: str, level: str, message: str, request_id: str = NO_REQUEST) -> str:
    """One line in the shared shape, stamped now."""
    return f"{utc_stamp()} {level} {logger} [{request_id}] {message}"
