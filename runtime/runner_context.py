"""Per-request context of the runner (request id, fate) and its log format.

The request id travels in a context variable so every log line written while
a request is served, the user's included and from worker threads, carries it
without the user passing anything around.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from dataclasses import dataclass

REQUEST_ID_HEADER = "x-skyform-request-id"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"

log = logging.getLogger("skyform.runner")


@dataclass(slots=True)
class RequestContext:
    """One request in flight. `exit_code` set means: answer, then end this runner."""

    request_id: str
    exit_code: int | None = None
    exit_reason: str = ""
    logs: list[dict[str, str]] | None = None  # this request's own log lines (request_logs)
    partial_line: str = ""  # printed text not yet ended by a newline

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


class RequestIdFilter(logging.Filter):
    """Adds `record.request_id` ("-" outside a request) for the log format."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = _current.get()
        record.request_id = ctx.request_id if ctx is not None else "-"
        return True


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr, one line per record, each with the request id it belongs to."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    from skyform.runtime.request_logs import install_capture

    install_capture()
    # uvicorn's own start/stop chatter is replaced by the runner's lines.
    logging.getLogger("uvicorn").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    logging.getLogger("uvicorn.access").disabled = True


def flush_logs() -> None:
    """Flush every handler: the runner may leave through `os._exit`, which skips that."""
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stderr.flush()
    sys.stdout.flush()
