"""The runner's outer ASGI layer: health, metrics, auth, request ids and the status rules.

A single pure-ASGI callable in front of the App's FastAPI routes: it answers
`/health` and `/metrics` itself (no routing, no validation), checks the runner
token, sets the request id, counts and times each request, and watches the
status each endpoint answers with. A 503 (or a request the endpoint layer
marked fatal) makes the runner end itself once the response is written.
It never buffers or wraps bodies, so a request costs one extra function call
per ASGI message.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hmac
import itertools
import json
import logging
import math
import secrets
import time
from collections.abc import Callable
from typing import Any

from skyform.runtime.asgi import (
    JSON,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    dump,
    send_response,
)
from skyform.runtime.metrics import Registry
from skyform.runtime.request_logs import LIVE_LOGS_PREFIX, LOGS_HEADER, encode_logs
from skyform.runtime.runner_context import (
    REQUEST_ID_HEADER,
    RequestContext,
    enter_request,
    leave_request,
)
from skyform.runtime.runner_errors import EXIT_UNHEALTHY, error_body

log = logging.getLogger("skyform.runner")

_REQUEST_ID_BYTES = REQUEST_ID_HEADER.encode()
_MAX_REQUEST_ID = 200
_LOGS_HEADER = LOGS_HEADER.encode()


class Phase(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    EXITING = "exiting"


class RunnerState:
    """Where the runner is in its life; `fail` asks it to end (the supervisor does the exit)."""

    def __init__(self, app_name: str, revision: str, on_fail: Callable[[int, str], None]) -> None:
        self.app_name = app_name
        self.revision = revision
        self.phase = Phase.STARTING
        self._on_fail = on_fail
        self._settled = asyncio.Event()  # set once the runner leaves STARTING
        self._ready_body = json.dumps(
            {"status": "ready", "app": app_name, "revision": revision}
        ).encode()

    def mark_ready(self) -> None:
        if self.phase is Phase.STARTING:
            self.phase = Phase.READY
        self._settled.set()

    def drain(self) -> None:
        if self.phase in (Phase.STARTING, Phase.READY):
            self.phase = Phase.DRAINING
        self._settled.set()

    def fail(self, code: int, reason: str) -> None:
        if self.phase is Phase.EXITING:
            return
        self.phase = Phase.EXITING
        self._settled.set()
        self._on_fail(code, reason)

    async def wait_settled(self, timeout: float) -> None:
        """Return once the runner is past STARTING, or after `timeout` seconds.

        Lets `GET /health?wait=S` answer the moment setup() ends: the gateway
        learns of readiness at once without polling 20 times a second through
        a long setup() (each poll costs the runner GIL time that the setup
        thread, importing torch, would otherwise have).
        """
        if self.phase is Phase.STARTING and timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), timeout)

    def health(self) -> tuple[int, bytes]:
        if self.phase is Phase.READY:
            return 200, self._ready_body
        return 503, json.dumps({"status": self.phase.value}).encode()


class RunnerMetrics:
    """The runner's Prometheus series; per-request updates are a dict lookup and two adds."""

    def __init__(self, state: RunnerState) -> None:
        self.registry = Registry()
        self._requests = self.registry.counter(
            "skyform_runner_requests_total", "Requests answered, by endpoint and status.",
            ["endpoint", "status"],
        )  # fmt: skip
        self._latency = self.registry.histogram(
            "skyform_runner_request_duration_seconds",
            "Time from request to the end of the response, by endpoint.",
            ["endpoint"],
        )
        self.in_flight = self.registry.gauge(
            "skyform_runner_requests_in_flight", "Requests being served now."
        ).labels()
        ready = self.registry.gauge("skyform_runner_ready", "1 when the runner takes requests.")
        ready.set_function(lambda: 1.0 if state.phase is Phase.READY else 0.0)
        self._series: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        series = self._series.get((endpoint, status))
        if series is None:
            series = self._series[(endpoint, status)] = (
                self._requests.labels(endpoint, str(status)),
                self._latency.labels(endpoint),
            )
        series[0].value += 1
        series[1].observe(seconds)


class RunnerASGI:
    """Wraps the App's routes with the runner's rules (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        state: RunnerState,
        metrics: RunnerMetrics,
        endpoint_paths: set[str],
        token: str | None,
    ) -> None:
        self.app = app
        self.state = state
        self.metrics = metrics
        self._paths = frozenset(endpoint_paths) | {"/openapi.json"}
        self._auth = f"Bearer {token}".encode() if token else None
        # Requests being served, by id: the gateway reads their log lines so far.
        self._active: dict[str, RequestContext] = {}
        # Generated ids: a random per-process prefix and a counter (32 hex digits, unique
        # across runners without a syscall per request).
        prefix, counter = secrets.token_hex(8), itertools.count(1)
        self._new_request_id = lambda: f"{prefix}{next(counter):016x}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            elif scope["type"] == "websocket":
                await self._websocket(scope, receive, send)
            return
        path = scope["path"]
        if path == "/health":
            wait = _health_wait(scope.get("query_string", b""))
            if wait:
                await self.state.wait_settled(wait)
            status, body = self.state.health()
            await send_response(send, status, body)
            return

        request_id, authorization = _id_and_token(scope)
        if request_id is None:
            request_id = self._new_request_id()
        extra = [(_REQUEST_ID_BYTES, request_id.encode())]

        if self._auth is not None and not _same(authorization, self._auth):
            refusal = error_body("missing or wrong runner token", "unauthorized", request_id)
            await send_response(
                send, 401, dump(refusal), JSON, [*extra, (b"www-authenticate", b"Bearer")]
            )
            return
        if path == "/metrics":
            await send_response(
                send, 200, self.metrics.registry.render().encode(), _PROMETHEUS, extra
            )
            return
        if path.startswith(LIVE_LOGS_PREFIX) and scope["method"] == "GET":
            ctx = self._active.get(path[len(LIVE_LOGS_PREFIX) :].removesuffix("/logs"))
            status = 200 if ctx is not None else 404
            await send_response(send, status, dump({"logs": (ctx.logs if ctx else None) or []}))
            return
        if self.state.phase is not Phase.READY:
            detail = f"runner is {self.state.phase.value}, not taking requests"
            refusal = error_body(detail, "runner_not_ready", request_id)
            await send_response(send, 503, dump(refusal), JSON, extra)
            return
        await self._serve(scope, receive, send, path, request_id, extra)

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        path: str,
        request_id: str,
        extra: list[tuple[bytes, bytes]],
    ) -> None:
        ctx = RequestContext(request_id)
        token = enter_request(ctx)
        self._active[request_id] = ctx
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *extra]
                if ctx.logs:
                    message["headers"].append((_LOGS_HEADER, encode_logs(ctx.logs)))
            await send(message)

        started = time.perf_counter()
        self.metrics.in_flight.value += 1
        try:
            await self.app(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # The drain's grace ran out: say so (503, retry elsewhere) rather than a bare 500.
            if status == 0:
                status = 503
                detail = "the runner stopped before this request finished"
                body = dump(error_body(detail, "runner_shutdown", request_id))
                await send_response(send, 503, body, JSON, extra)
            raise
        except Exception:
            log.exception("unhandled error while serving %s", path)
            if status == 0:
                failure = error_body("internal error", "internal_error", request_id)
                await send_response(send, 500, dump(failure), JSON, extra)
                status = 500
        finally:
            self.metrics.in_flight.value -= 1
            leave_request(token)
            self._active.pop(request_id, None)
            label = path if path in self._paths else "other"
            self.metrics.observe(label, status, time.perf_counter() - started)
        if ctx.exit_code is not None:
            self.state.fail(ctx.exit_code, f"{ctx.exit_reason} (request {request_id})")
        elif status == 503:
            self.state.fail(EXIT_UNHEALTHY, f"{path} answered 503 (request {request_id})")

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A websocket connection: the same token and readiness rules, close codes for refusals.

        Refused before the handshake completes, the client sees HTTP 403 (wrong
        token) or a close with 1013 (not ready: try again later).
        """
        request_id, authorization = _id_and_token(scope)
        if self._auth is not None and not _same(authorization, self._auth):
            await send({"type": "websocket.close", "code": 1008, "reason": "runner token"})
            return
        if self.state.phase is not Phase.READY:
            await send({"type": "websocket.close", "code": 1013, "reason": "runner not ready"})
            return
        ctx = RequestContext(request_id or self._new_request_id())
        token = enter_request(ctx)
        self.metrics.in_flight.value += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.metrics.in_flight.value -= 1
            leave_request(token)
        if ctx.exit_code is not None:
            self.state.fail(ctx.exit_code, f"{ctx.exit_reason} (websocket {ctx.request_id})")


_PROMETHEUS = Registry.content_type.encode()


async def _lifespan(receive: Receive, send: Send) -> None:
    """Acknowledge lifespan events; setup and teardown are run by the runner itself."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _id_and_token(scope: Scope) -> tuple[str | None, bytes | None]:
    """The caller's valid request id and its Authorization header, in one pass over the headers."""
    request_id = authorization = None
    for name, value in scope["headers"]:
        if name == _REQUEST_ID_BYTES:
            request_id = _valid_request_id(value)
        elif name == b"authorization":
            authorization = value
    return request_id, authorization


def _valid_request_id(value: bytes) -> str | None:
    """The caller's id if it is short printable ASCII without spaces, else None (a new one)."""
    if 0 < len(value) <= _MAX_REQUEST_ID and all(33 <= b <= 126 for b in value):
        return value.decode("ascii")
    return None


def _same(given: bytes | None, expected: bytes) -> bool:
    return given is not None and hmac.compare_digest(given, expected)


# The longest `GET /health?wait=S` may hold a request open.
MAX_HEALTH_WAIT_S = 10.0


def _health_wait(query: bytes) -> float:
    """Seconds from `wait=S` in a /health query (0 when absent or malformed, capped)."""
    for part in query.split(b"&"):
        if part.startswith(b"wait="):
            try:
                value = float(part[5:])
            except ValueError:
                return 0.0
            return min(max(value, 0.0), MAX_HEALTH_WAIT_S) if math.isfinite(value) else 0.0
    return 0.0
