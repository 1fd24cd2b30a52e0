"""Each request's own log lines: captured on the runner, shipped to the gateway, stored there.

fal's queue status (`?logs=1`) lists the lines an endpoint printed or logged
while serving that one request. The runner already knows which request a
thread or task serves, so capture is cheap: a logging handler, and the
runner's stamped stdout/stderr for whole printed lines, append `{message,
level, timestamp, source}` to the current request's list; nothing at all
happens outside a request. The capture lives with the request's context
(`runner_context.record_line`, `RequestLogHandler`); this module holds the
lines' limits and how they travel, which the gateway reads too.

The lines travel back in one response header, `x-skyform-logs` (base64 of
the JSON list), written when the response starts: for a plain endpoint every
line is in by then. A request's lines are capped (`MAX_LINES`, `MAX_BYTES`),
so the header stays well under any HTTP implementation's header limit; a
capped list ends with one line saying more were left out. While a request
runs, the gateway reads its lines so far from the runner
(`GET /-/requests/{id}/logs`, runner token required), for fal's IN_PROGRESS logs.
"""

from __future__ import annotations

import base64
import binascii
import json

LOGS_HEADER = "x-skyform-logs"
# `GET /-/requests/{id}/logs` on a runner: the lines of a request still being served.
LIVE_LOGS_PREFIX = "/-/requests/"
MAX_LINES = 200
MAX_BYTES = 24 * 1024
MAX_LINE_CHARS = 2000

LogLine = dict[str, str]


def encode_logs(logs: list[LogLine]) -> bytes:
    """The header value for `logs`: base64 JSON, oldest lines kept when over `MAX_BYTES`."""
    raw = json.dumps(logs, separators=(",", ":")).encode()
    while len(raw) * 4 // 3 > MAX_BYTES and len(logs) > 1:
        logs = logs[: len(logs) // 2]
        raw = json.dumps(logs, separators=(",", ":")).encode()
    return base64.b64encode(raw)


def decode_logs(value: str | None) -> list[LogLine]:
    """The lines in a runner's `x-skyform-logs` header; [] when absent or unreadable."""
    if not value:
        return []
    try:
        data = json.loads(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        return []
    if not isinstance(data, list):
        return []
    return [
        {k: str(line.get(k, "")) for k in ("message", "level", "timestamp", "source")}
        for line in data
        if isinstance(line, dict)
    ]
