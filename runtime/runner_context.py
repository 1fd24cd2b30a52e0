"""Per-request context of the runner (request id, fate, its own log lines) and its log format.

The request id travels in a context variable so every log line written while
a request is served, the user's included and from worker threads, carries it
without the user passing anything around.
"""

from __future__ import annotations

import io
import logging
import sys
import threading
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from skyform.logformat import NO_REQUEST, log_line, utc_stamp
from skyform.runtime.request_logs import MAX_LINE_CHARS, MAX_LINES

REQUEST_ID_HEADER = "x-skyform-request-id"
_FAL_LEVEL = {"WARNING": "WARN"}  # printed lines' levels as fal's request logs spell them
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"

log = logging.getLogger("skyform.runner")


@dataclass(slots=True)
class RequestContext:
    """One request in flight. `exit_code` set means: answer, then end this runner."""

    request_id: str
    exit_code: int | None = None
    exit_reason: str = ""
    logs: list[dict[str, str]] | None = None  # this request's own log lines (request_logs)

    def end_runner(self, code: int, reason: str) -> None:
        if self.exit_code is None:
            self.exit_code = code
            self.exit_reason = reason


_current: ContextVar[RequestContext | None] = ContextVar("skyform_request", default=None)


def current_request() -> RequestContext | None:
    """The request being served by this task or thread, if any."""
    return _current.get()


def enter_request(ctx: RequestContext) -> object:
    return _current.set(ctx)


def leave_request(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]


# -- each request's own log lines (request_logs holds their shape and wire format) ------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def record_line(message: str, level: str, source: str) -> None:
    """Append one line to the current request's logs (a no-op outside a request)."""
    ctx = current_request()
    if ctx is None:
        return
    logs = ctx.logs
    if logs is None:
        logs = ctx.logs = []
    if len(logs) > MAX_LINES:
        return
    if len(logs) == MAX_LINES:
        logs.append(
            {
                "message": "[more lines left out]",
                "level": "WARN",
                "timestamp": _now(),
                "source": "skyform",
            }
        )
        return
    logs.append(
        {"message": message[:MAX_LINE_CHARS], "level": level, "timestamp": _now(), "source": source}
    )


class RequestLogHandler(logging.Handler):
    """Logging records made while serving a request become that request's log lines."""

    def emit(self, record: logging.LogRecord) -> None:
        if current_request() is None:
            return
        try:
            message = record.getMessage()
        except Exception:
            message = str(record.msg)
        level = {"WARNING": "WARN", "CRITICAL": "ERROR"}.get(record.levelname, record.levelname)
        record_line(message, level, "user" if not record.name.startswith("skyform") else "skyform")


class RequestIdFilter(logging.Filter):
    """Adds `record.request_id` ("-" outside a request) for the log format."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _current.get()
        record.request_id = ctx.request_id if ctx is not None else "-"
        return True


class LineFormatter(logging.Formatter):
    """LOG_FORMAT with UTC ISO times, and every line of a record stamped.

    A traceback or a multi-line message gets the time, level and request id on
    each of its lines, so `skyform logs` can merge, filter and tail by line.
    """

    def __init__(self) -> None:
        super().__init__(LOG_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return utc_stamp(record.created)

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if "\n" not in text:
            return text
        first, *rest = text.split("\n")
        prefix = first[: len(first) - len(record.getMessage().split("\n")[0])]
        return "\n".join([first, *(prefix + line for line in rest)])


def stamp_line(stream_name: str, level: str, line: str) -> str:
    """One line of output that did not come through logging, in LOG_FORMAT's shape."""
    ctx = _current.get()
    return log_line(stream_name, level, line, ctx.request_id if ctx is not None else NO_REQUEST)


class StampedStream(io.TextIOBase):
    """What the App's code prints: each whole line stamped like a log record.

    `print()` in `setup()` or an endpoint then carries the time and request id
    too. Text is held until its line ends; `drain()` writes a trailing partial
    line (the runner calls it before it exits).
    """

    def __init__(self, target: TextIO, name: str, level: str) -> None:
        self._target = target
        self._name = name
        self._level = level
        self._partial = ""
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            data = self._partial + text
            *whole, self._partial = data.split("\n")
            for line in whole:
                line = line.rstrip("\r")
                if line.strip() and _current.get() is not None:
                    level = _FAL_LEVEL.get(self._level, self._level)
                    record_line(line, level, self._name)
                self._target.write(stamp_line(self._name, self._level, line) + "\n")
            if whole:
                self._target.flush()
        return len(text)

    def flush(self) -> None:
        self._target.flush()

    def drain(self) -> None:
        with self._lock:
            if self._partial:
                self._target.write(stamp_line(self._name, self._level, self._partial) + "\n")
                self._partial = ""
            self._target.flush()

    def fileno(self) -> int:
        return self._target.fileno()

    def isatty(self) -> bool:
        return False


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr, one line per record, each with the request id it belongs to."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.addHandler(RequestLogHandler())  # each request's own lines (fal's `logs`)
    # uvicorn's own start/stop chatter is replaced by the runner's lines.
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True


def stamp_output() -> None:
    """From now on, lines printed to stdout and stderr are stamped like log records.

    The log handler keeps the raw stream it was given, so records are not
    stamped twice.
    """
    if not isinstance(sys.stdout, StampedStream):
        sys.stdout = StampedStream(sys.stdout, "stdout", "INFO")
    if not isinstance(sys.stderr, StampedStream):
        sys.stderr = StampedStream(sys.stderr, "stderr", "WARNING")


def flush_logs() -> None:
    """Flush every handler: the runner may leave through `os._exit`, which skips that."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    for stream in (sys.stderr, sys.stdout):
        if isinstance(stream, StampedStream):
            stream.drain()
        else:
            stream.flush()
