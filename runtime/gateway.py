"""The gateway: a stack's front door (`python -m skyform.runtime.gateway`).

    python -m skyform.runtime.gateway --port N --state-dir DIR [--host H] [--stack NAME]
        [--tls-cert PEM --tls-key PEM] [--runner-cert PEM --runner-key PEM --runner-ca PEM]
        [--public-url URL] [--trusted-proxy IP/CIDR]...

Keys: SKYFORM_ADMIN_TOKEN (admin API), SKYFORM_API_KEY (callers of private
apps), SKYFORM_BUNDLE_KEY (verifies bundles, seals stored secrets) and
SKYFORM_RUNNER_TOKEN, read from a JSON object on `--credentials-fd N` (how the
local provider starts it: nothing in /proc/<pid>/environ) or else from the
environment. Each runner gets a token of its own, minted here. The process is
non-dumpable and writes its files owner-only (umask 077).
SKYFORM_GATEWAY_LIMITS (JSON overrides of `GatewayLimits`, from the stack file),
SKYFORM_WEBHOOK_KEY (signs webhook POSTs) and SKYFORM_WEBHOOK_HOSTS (comma-separated
`gateway.webhook_hosts`; see runtime/webhooks.py), on the pipe or in the environment.
The provider comes from `<state-dir>/provider.json` (absent: local).

Routes (DESIGN §7):
    POST /{app}/{path}                         synchronous call
    POST /queue/{app}/{path}                   202 {request_id, status_url, response_url, cancel_url}
    GET  /queue/{app}/requests/{id}/status     202 IN_QUEUE (queue_position) / IN_PROGRESS, 200 COMPLETED
    GET  /queue/{app}/requests/{id}/status/stream   the same, as server-sent events
    GET  /queue/{app}/requests/{id}            the result once COMPLETED
    PUT  /queue/{app}/requests/{id}/cancel     cancel while queued
    GET  /{app}/playground                     a page to try each endpoint
    /-/...                                     admin API (bearer SKYFORM_ADMIN_TOKEN)
    /{stack}/{app}/..., /queue/{stack}/{app}/...   fal-style owner/alias ids (fal_compat)
    PUT  /-/tls                                a renewed certificate, and the public URL

A plain ASGI callable rather than a framework: the proxy path is the hot path
and every microsecond there shows in added latency.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from skyform.credentials import CREDENTIALS_FLAG, harden_process, read_credentials
from skyform.errors import SkyformError
from skyform.files import write_atomic
from skyform.names import app_name_problem
from skyform.options import option_or_default
from skyform.providers.base import TLSMaterial
from skyform.runtime import fal_compat
from skyform.runtime.asgi import JSON, Receive, Scope, Send, dump, send_response
from skyform.runtime.gateway_metrics import GatewayMetrics
from skyform.runtime.gateway_scheduler import (
    MAX_ATTEMPTS,
    TIMEOUT_MARGIN_S,
    AppState,
    LiveRequest,
    RequestNotCancellable,
    Scheduler,
)
from skyform.runtime.gateway_urls import PublicURL, default_public_url
from skyform.runtime.gateway_validation import BodyRefused, BodyRules, check_body
from skyform.runtime.limits import BodyBudget, GatewayLimits
from skyform.runtime.metrics import Registry
from skyform.runtime.queue_store import QueueStore, StoredRequest
from skyform.runtime.runner_context import REQUEST_ID_HEADER
from skyform.runtime.sealing import Sealer
from skyform.runtime.webhooks import WebhookPolicy, WebhookRefused, WebhookSender
from skyform.suggest import did_you_mean

log = logging.getLogger("skyform.gateway")

_TEXT = b"text/plain; charset=utf-8"
_HTML = b"text/html; charset=utf-8"
_REQUEST_ID = REQUEST_ID_HEADER.encode()
NO_RETRY_HEADER = b"x-skyform-no-retry"
IDEMPOTENCY_HEADER = b"x-skyform-idempotency-key"
MAX_IDEMPOTENCY_KEY = 256
RETRY_AFTER_S = 1  # what a caller refused for lack of room is told to wait
# Bodies of the admin API (bundles): its caller holds the admin token, so the
# callers' limits do not apply; this bound only catches a mistake.
ADMIN_MAX_BODY = 1024 * 1024 * 1024
PUBLIC_URL_FILE = "public-url"  # the public URL `PUT /-/tls` taught a gateway
STREAM_POLL_S = 0.25  # how often a status stream looks for a changed queue position
# `GET /-/apps?wait=S`: the longest a caller is kept waiting (a shutdown waits for it),
# and how often a waiting answer is compared again without being notified.
MAX_APPS_WAIT_S = 10.0
APPS_RECHECK_S = 1.0


class HTTPError(Exception):
    def __init__(
        self,
        status: int,
        detail: str,
        error_type: str = "",
        extra: dict[str, Any] | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.error_type = error_type
        self.extra = extra or {}
        self.headers = headers or []


class Gateway:
    """The ASGI application; owns the store, the scheduler and the metrics."""

    def __init__(
        self,
        *,
        state_dir: Path,
        stack: str,
        provider: Any,
        admin_token: str,
        api_key: str,
        bundle_key: str,
        webhook_key: bytes = b"",
        webhook_hosts: frozenset[str] | None = None,
        limits: GatewayLimits | None = None,
        public_url: str = "",
        trusted_proxies: tuple[str, ...] = (),
        runner_tls: TLSMaterial | None = None,
        tls_files: tuple[Path, Path] | None = None,
        public_url_configured: bool = False,
    ) -> None:
        self.state_dir = Path(state_dir)
        self.limits = limits or GatewayLimits()
        self.body_budget = BodyBudget(self.limits.max_inflight_body_bytes)
        # Returned URLs start with this, never with a caller's Host header.
        self.public_url = PublicURL(public_url, trusted_proxies) if public_url else None
        self.trusted_proxies = trusted_proxies
        self.tls_files = tls_files  # what the server serves (and reloads when it changes)
        self.public_url_configured = public_url_configured
        self.stack = stack
        self.admin_token = admin_token.encode()
        self.api_key = api_key
        self.bundle_key = bundle_key
        self.metrics = GatewayMetrics()
        sealer = Sealer(bundle_key) if bundle_key else None
        self.store = QueueStore(self.state_dir / "gateway.sqlite3", sealer=sealer)
        self.scheduler = Scheduler(
            store=self.store,
            provider=provider,
            metrics=self.metrics,
            stack=stack,
            state_dir=self.state_dir,
            bundle_key=bundle_key,
            limits=self.limits,
            runner_tls=runner_tls,
        )
        self.webhook_policy = WebhookPolicy(webhook_hosts)
        self.webhooks = WebhookSender(self.store, webhook_key, self.webhook_policy)
        self.scheduler.on_webhook = self.webhooks.wake
        self.accepting = True
        self._body_rules: dict[str, tuple[dict[str, Any], BodyRules]] = {}

    # --- ASGI ---------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] == "websocket":
            from skyform.runtime.ws_proxy import proxy_websocket, refuse

            try:
                app, path = self._websocket_target(scope)
            except HTTPError as exc:
                body = {"detail": exc.detail, "error_type": exc.error_type or "refused"}
                await refuse(send, exc.status, dump(body))
                return
            await proxy_websocket(self, app, path, scope, receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            await self._route(scope, receive, send)
        except HTTPError as exc:
            body = {"detail": exc.detail, **exc.extra}
            if exc.error_type:
                body["error_type"] = exc.error_type
            headers = [(b"www-authenticate", b"Bearer")] if exc.status == 401 else []
            await send_response(send, exc.status, dump(body), JSON, headers + exc.headers)
        except Exception:
            log.exception("error while serving %s %s", scope["method"], scope["path"])
            body = {
                "detail": "internal gateway error (see the gateway log)",
                "error_type": "internal_error",
            }
            await send_response(send, 500, dump(body))

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.scheduler.start()
                    self.webhooks.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.accepting = False
                await self.scheduler.close()
                await self.webhooks.close()
                self.store.close()
                log.info("gateway stopped; unfinished requests stay queued for the next start")
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if path.startswith("/-/"):
            await self._admin(scope, receive, send, path[3:], method)
            return
        if not self.accepting:
            raise HTTPError(503, "the gateway is shutting down", "gateway_stopping")
        if path.startswith("/queue/"):
            await self._queue(scope, receive, send, path[7:], method)
            return
        name, rest, _prefix = fal_compat.split_app(path[1:], self.stack, self.scheduler.apps)
        app = self._app(name)
        rest = "/" + rest.strip("/")
        if rest == "/playground" and method == "GET" and app.endpoint_method(rest) is None:
            await self._playground(send, app)
            return
        if rest == "/openapi.json" and method == "GET" and app.endpoint_method(rest) is None:
            self._check_caller(scope, app)
            await send_response(send, 200, dump(app.meta.get("openapi", {})), JSON)
            return
        self._check_caller(scope, app)
        await self._sync_call(scope, receive, send, app, rest, method)

    # --- public routes ------------------------------------------------------

    def _websocket_target(self, scope: Scope) -> tuple[AppState, str]:
        """The app and `websocket=True` endpoint of `/{app}/{path}` or `/{stack}/{app}/{path}`."""
        if not self.accepting:
            raise HTTPError(503, "the gateway is shutting down", "gateway_stopping")
        parts = scope["path"].strip("/").split("/")
        if len(parts) >= 2 and parts[0] == self.stack and parts[1] in self.scheduler.apps:
            parts = parts[1:]
        app = self._app(parts[0])
        rest = "/" + "/".join(parts[1:])
        ep = app.endpoint_of(rest)
        if ep is None or ep.get("kind") != "websocket":
            sockets = [
                e["path"] for e in app.meta.get("endpoints", []) if e.get("kind") == "websocket"
            ]
            raise HTTPError(
                404,
                f"app {app.name!r} has no websocket endpoint {rest}; websocket endpoints: "
                + (", ".join(sockets) or "none"),
                "endpoint_not_found",
            )
        self._check_caller(scope, app)
        return app, rest

    async def _sync_call(
        self, scope: Scope, receive: Receive, send: Send, app: AppState, path: str, method: str
    ) -> None:
        ep_method = self._endpoint(app, path, method)
        body = await self._read_body(scope, receive, app)
        # The body stays in memory until the call is answered: charged until then.
        try:
            req = self._submit(scope, app, path, ep_method, body, persist=False)
            bound = app.limits.request_timeout * MAX_ATTEMPTS + app.limits.startup_timeout
            try:
                async with asyncio.timeout(bound):
                    await req.done.wait()
            except TimeoutError:
                req.waiting = False
                self.scheduler.forget(req)
        finally:
            self.body_budget.release(len(body))
        if req.stream is not None and req.released is not None:
            await self._forward(send, receive, app, req)
            return
        if req.status != "COMPLETED":
            raise HTTPError(
                504,
                f"no answer within {bound:g}s; the request is still running",
                "timeout",
                extra={"request_id": req.id},
            )
        await self._send_result(send, req)

    async def _forward(self, send: Send, receive: Receive, app: AppState, req: LiveRequest) -> None:
        """Forward a streamed answer as it arrives (see `gateway_stream`); then free the slot."""
        from skyform.runtime.gateway_client import StreamBroken
        from skyform.runtime.gateway_stream import forward_stream

        assert req.stream is not None and req.released is not None
        idle = app.limits.request_timeout + TIMEOUT_MARGIN_S
        try:
            req.outcome = await forward_stream(
                send, receive, req.stream, [(_REQUEST_ID, req.id.encode())], req.id, idle
            )
        except (StreamBroken, TimeoutError) as exc:
            # Not an event stream: the body ends short, which the caller sees as an error.
            log.warning("request %s: the runner's stream broke off: %s", req.id, exc)
            req.outcome = "broken"
        except BaseException:
            req.outcome = "broken"
            raise
        finally:
            req.released.set()

    async def _queue(
        self, scope: Scope, receive: Receive, send: Send, rest: str, method: str
    ) -> None:
        name, tail, prefix = fal_compat.split_app(rest, self.stack, self.scheduler.apps)
        app = self._app(name)
        self._check_caller(scope, app)
        parts = tail.strip("/").split("/")
        if len(parts) >= 2 and parts[0] == "requests" and len(parts) <= 4:
            request_id = parts[1]
            action = "/".join(parts[2:])
            if action == "" and method == "GET":
                await self._result(send, scope, app, request_id, prefix)
                return
            if action == "status" and method == "GET":
                shown = await self._status_of(scope, self._request(app, request_id), prefix)
                status = 200 if shown["status"] == "COMPLETED" else 202  # as of the body
                await send_response(send, status, dump(shown))
                return
            if action == "status/stream" and method == "GET":
                await self._status_stream(scope, receive, send, app, request_id, prefix)
                return
            if action == "cancel" and method in ("PUT", "POST"):
                await self._cancel(send, app, request_id)
                return
        path = "/" + tail.strip("/")
        ep_method = self._endpoint(app, path, method, queue=True)
        webhook = await self._webhook(scope)
        key = _idempotency_key(scope)
        first = self.scheduler.find_by_idempotency_key(app.name, key) if key else None
        if first is None:
            self._check_queue_room(app, _content_length(scope) or 0)
            body = await self._read_body(scope, receive, app)
            try:
                # Looked up again: a twin submitted while this body streamed in wins.
                first = self.scheduler.find_by_idempotency_key(app.name, key) if key else None
                if first is None:
                    self._check_queue_room(app, len(body))
                    first = self._submit(scope, app, path, ep_method, body, True, key, webhook)
            finally:
                # Stored now, and bounded by the app's queued bytes from here on.
                self.body_budget.release(len(body))
        await send_response(send, 202, dump(self._urls(scope, prefix, first.id)))

    def _check_queue_room(self, app: AppState, size: int) -> None:
        """429 when `size` more body bytes would pass the app's queued-bytes bound."""
        limit = self.limits.max_queued_bytes_per_app
        if app.queued_bytes + size > limit:
            raise HTTPError(
                429,
                f"app {app.name!r} has {app.queued_bytes} bytes of requests queued; "
                f"{size} more would pass its bound of {limit} bytes: retry later",
                "queue_full",
                headers=[(b"retry-after", b"%d" % RETRY_AFTER_S)],
            )

    def _submit(
        self,
        scope: Scope,
        app: AppState,
        path: str,
        method: str,
        body: bytes,
        persist: bool,
        idem_key: str | None = None,
        webhook_url: str | None = None,
    ) -> LiveRequest:
        """Check the body, hand the request to the scheduler (durable when `persist`).

        Content type and (for the queue) the JSON schema are checked here, so a
        body that cannot succeed is refused at once (`gateway_validation`).
        """
        content_type = _header(scope, b"content-type")
        ep = app.endpoint_of(path)
        rule = self._rules_of(app).rule(ep["path"], method) if ep is not None else None
        try:
            content_type = check_body(rule, content_type, body, validate=persist) or content_type
        except BodyRefused as exc:
            raise HTTPError(
                exc.status, str(exc.detail), exc.error_type, extra={"detail": exc.detail}
            ) from None
        try:
            start_timeout = fal_compat.request_timeout(
                _header(scope, fal_compat.REQUEST_TIMEOUT_HEADER)
            )
            hint = fal_compat.runner_hint(_header(scope, fal_compat.RUNNER_HINT_HEADER))
        except fal_compat.FalHeaderError as exc:
            raise HTTPError(400, str(exc), "invalid_header") from None
        return self.scheduler.submit(
            app,
            _with_query(path, scope),
            method,
            body,
            content_type or "application/json",
            no_retry=_header(scope, NO_RETRY_HEADER) == "1",
            persist=persist,
            idem_key=idem_key,
            hint=hint,
            start_timeout=start_timeout,
            webhook_url=webhook_url,
        )

    async def _webhook(self, scope: Scope) -> str | None:
        """The submit's `?fal_webhook=` URL, checked (400 when the gateway will not call it)."""
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        urls = query.get("fal_webhook")
        if not urls:
            return None
        try:
            await self.webhook_policy.check(urls[-1])
        except WebhookRefused as exc:
            raise HTTPError(400, str(exc), "webhook_refused") from None
        return urls[-1]

    def _rules_of(self, app: AppState) -> BodyRules:
        """The body rules of `app`'s current bundle (built once per revision)."""
        cached = self._body_rules.get(app.name)
        if cached is None or cached[0] is not app.meta:
            limit = float(option_or_default(app.options, "max_body_mb"))
            cached = (app.meta, BodyRules(app.meta.get("openapi", {}), limit))
            self._body_rules[app.name] = cached
        return cached[1]

    async def _read_body(
        self, scope: Scope, receive: Receive, app: AppState | None = None, *, admin: bool = False
    ) -> bytes:
        """The request body, read while charging the gateway-wide in-flight body budget.

        The declared length is checked (413) and charged (503 + Retry-After when
        the budget is spent) before a byte is read; a body without one is
        charged chunk by chunk as it streams in. The caller releases
        `len(body)` once it no longer holds the body; on an error here the
        charge is released before raising.

        `admin` (a caller holding the admin token, registering a bundle): the
        callers' limits do not apply, `ADMIN_MAX_BODY` does, and the body is
        not charged (the caller has nothing to release).
        """
        limit = ADMIN_MAX_BODY if admin else self.limits.max_body_bytes
        too_large = _too_large(limit, admin)
        if app is not None and not admin and (rules := self._rules_of(app)).max_bytes < limit:
            # The app's own max_body_mb is the tighter bound: the 413 names it.
            refused = rules.too_large()
            limit = rules.max_bytes
            too_large = HTTPError(
                413, str(refused.detail), refused.error_type, headers=[(b"connection", b"close")]
            )
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            raise too_large
        charged = 0
        try:
            if declared and not admin:
                if not self.body_budget.try_charge(declared):
                    raise _budget_spent(self.body_budget)
                charged = declared
            # With a declared length the buffer is allocated once (growing it
            # would copy it, holding twice the body for a moment).
            buf = bytearray(declared or 0)
            size = 0
            while True:
                # A stalled body is cut off by the server (body_timeout): a disconnect.
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise HTTPError(400, "the caller went away before sending its whole body")
                chunk = message.get("body", b"")
                end = size + len(chunk)
                if end > limit:
                    raise too_large
                if end > charged and not admin:
                    if not self.body_budget.try_charge(end - charged):
                        raise _budget_spent(self.body_budget)
                    charged = end
                if end <= len(buf):
                    buf[size:end] = chunk
                else:
                    del buf[size:]
                    buf += chunk
                size = end
                if not message.get("more_body"):
                    break
            del buf[size:]  # a client that sent less than it declared
        except BaseException:
            self.body_budget.release(charged)
            raise
        if charged > size:
            self.body_budget.release(charged - size)
        return bytes(buf) if size < 65536 else buf  # type: ignore[return-value]

    async def _result(
        self, send: Send, scope: Scope, app: AppState, request_id: str, prefix: str
    ) -> None:
        req = self._request(app, request_id)
        if req.status != "COMPLETED":
            # No logs asked for here, so this does not wait: the status is as of now.
            await send_response(send, 202, dump(self._status(scope, req, prefix)))
            return
        await self._send_result(send, req)

    async def _status_stream(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        app: AppState,
        request_id: str,
        prefix: str,
    ) -> None:
        """Each change of the status object as one server-sent event, until COMPLETED."""
        req = self._request(app, request_id)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-cache"),
                    (_REQUEST_ID, req.id.encode()),
                ],
            }
        )
        gone = asyncio.Event()

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()

        watcher = asyncio.create_task(watch())
        last = b""
        try:
            while not gone.is_set():
                req = self.scheduler.find(request_id) or req
                body = dump(await self._status_of(scope, req, prefix))
                if body != last:
                    last = body
                    event = fal_compat.sse_event(body)
                    await send({"type": "http.response.body", "body": event, "more_body": True})
                if req.status == "COMPLETED":
                    break
                done = req.done if isinstance(req, LiveRequest) else gone
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(STREAM_POLL_S):
                        await done.wait()
            await send({"type": "http.response.body", "body": b""})
        finally:
            watcher.cancel()

    async def _cancel(self, send: Send, app: AppState, request_id: str) -> None:
        self._request(app, request_id)
        try:
            self.scheduler.cancel(request_id)
        except RequestNotCancellable as exc:
            status = "ALREADY_COMPLETED" if str(exc) == "COMPLETED" else str(exc)
            raise HTTPError(
                400,
                f"request {request_id} is {str(exc).lower()}; only queued ones can be cancelled",
                extra={"status": status},
            ) from None
        await send_response(
            send, 202, dump({"status": "CANCELLATION_REQUESTED", "request_id": request_id})
        )

    async def _send_result(self, send: Send, req: StoredRequest) -> None:
        headers = [(_REQUEST_ID, req.id.encode())]
        if req.error_type:
            headers.append((fal_compat.ERROR_TYPE_HEADER, req.error_type.encode()))
            if req.error_type == "request_timeout" and req.started is None:
                headers.append(fal_compat.TIMEOUT_TYPE_HEADER)
        content_type = (req.result_type or "application/json").encode()
        await send_response(
            send, req.result_status or 200, req.result_body or b"", content_type, headers
        )

    async def _status_of(self, scope: Scope, req: StoredRequest, prefix: str) -> dict[str, Any]:
        """`_status`, with a running request's log lines so far when `?logs=1` asks for them."""
        logs = None
        if req.status == "IN_PROGRESS" and isinstance(req, LiveRequest):
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            if fal_compat.wants_logs(query):
                logs = await req.live_logs()
                if req.status == "COMPLETED":
                    # It finished while its runner was asked: the lines so far may
                    # be none (the runner forgets a request once it answers); the
                    # stored lines are all of them.
                    logs = None
        return self._status(scope, req, prefix, logs)

    def _status(
        self,
        scope: Scope,
        req: StoredRequest,
        prefix: str,
        logs: list[dict[str, str]] | None = None,
    ) -> dict[str, Any]:
        """fal's status object; `logs` always there, filled with `?logs=1` (or `true`)."""
        out: dict[str, Any] = {"status": req.status, "request_id": req.id}
        if req.status == "IN_QUEUE":
            position = self.scheduler.queue_position(req)
            out["queue_position"] = position if position is not None else 0
        out.update(self._urls(scope, prefix, req.id))
        out["attempts"] = req.attempts
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        wanted = fal_compat.wants_logs(query)
        out["logs"] = (logs if logs is not None else list(req.logs or [])) if wanted else []
        if req.status == "COMPLETED":
            out["response_status"] = req.result_status
            if req.error_type:
                out["error"] = req.error
                out["error_type"] = req.error_type
            out["metrics"] = fal_compat.metrics(req.created, req.started, req.completed)
        return out

    def _urls(self, scope: Scope, app: str, request_id: str) -> dict[str, str]:
        """The request's URLs, under the app id form (`app` or `stack/app`) the caller used."""
        base = f"{self._base_url(scope)}/queue/{app}/requests/{request_id}"
        return {
            "request_id": request_id,
            "status_url": f"{base}/status",
            "response_url": base,
            "cancel_url": f"{base}/cancel",
        }

    def _base_url(self, scope: Scope) -> str:
        if self.public_url is not None:
            return self.public_url.for_request(scope)
        server = scope.get("server") or ("127.0.0.1", 80)  # an embedded Gateway in a test
        return default_public_url(scope.get("scheme", "http"), server[0], server[1])

    async def _playground(self, send: Send, app: AppState) -> None:
        from skyform.runtime.playground import render_playground

        page = render_playground(app.name, app.auth, app.meta.get("openapi", {}))
        await send_response(send, 200, page.encode(), _HTML)

    # --- admin API ----------------------------------------------------------

    async def _admin(
        self, scope: Scope, receive: Receive, send: Send, rest: str, method: str
    ) -> None:
        given = _header(scope, b"authorization") or ""
        if not hmac.compare_digest(given.encode(), b"Bearer " + self.admin_token):
            raise HTTPError(401, "admin API: missing or wrong bearer token", "unauthorized")
        parts = rest.strip("/").split("/")
        if rest == "health" and method == "GET":
            from skyform import __version__

            body = {"status": "ok", "stack": self.stack, "version": __version__, "pid": os.getpid()}
            await send_response(send, 200, dump(body))
        elif rest == "metrics" and method == "GET":
            s = self.scheduler
            text = self.metrics.render(
                {a.name: len(a.pending) for a in s.apps.values()},
                {a.name: a.in_progress() for a in s.apps.values()},
                s.runner_counts(),
            )
            await send_response(send, 200, text.encode(), Registry.content_type.encode())
        elif rest == "runners" and method == "GET":
            runners = [r.describe() for r in self.scheduler.all_runners()]
            await send_response(send, 200, dump({"runners": runners}))
        elif rest == "tls" and method == "PUT":
            body = self._replace_certificate(await self._read_body(scope, receive, admin=True))
            await send_response(send, 200, dump(body))
        elif rest == "apps" and method == "GET":
            await self._list_apps(scope, send)
        elif len(parts) == 2 and parts[0] == "apps":
            await self._admin_app(scope, receive, send, parts[1], method)
        elif len(parts) == 3 and parts[0] == "apps" and parts[2] == "logs" and method == "GET":
            query = parse_qs(scope.get("query_string", b"").decode())
            try:
                tail = int(query.get("tail", ["200"])[0])
            except ValueError:
                raise HTTPError(400, "tail must be an integer") from None
            every = query.get("all", ["0"])[0].lower() in ("1", "true", "yes")
            text = self._logs(self._app(parts[1]), max(tail, 0), every)
            await send_response(send, 200, text.encode(), _TEXT)
        else:
            raise HTTPError(404, f"no admin route {method} /-/{rest}")

    async def _list_apps(self, scope: Scope, send: Send) -> None:
        """`GET /-/apps[?wait=S]`: every app and its runners, with an ETag of that answer.

        With `wait` and `If-None-Match: <the ETag a caller has>`, the answer
        waits (up to S seconds, at most `MAX_APPS_WAIT_S`) until it differs from
        what the caller has: `apply` sees a runner become ready as it happens,
        without polling through the runner's `setup()`.
        """
        wait = _wait_seconds(scope)
        seen = _header(scope, b"if-none-match")
        deadline = time.monotonic() + wait
        while True:
            body = dump({"apps": [a.describe() for a in self.scheduler.apps.values()]})
            tag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
            left = deadline - time.monotonic()
            if tag != seen or left <= 0 or not self.accepting:
                break
            # Re-checked at least every APPS_RECHECK_S: a change nobody notified still shows.
            await self.scheduler.changes.wait(min(left, APPS_RECHECK_S))
        await send_response(send, 200, body, JSON, [(b"etag", tag.encode())])

    async def _admin_app(
        self, scope: Scope, receive: Receive, send: Send, name: str, method: str
    ) -> None:
        if method == "GET":
            await send_response(send, 200, dump(self._app(name).describe()))
        elif method == "PUT":
            if not self.accepting:
                raise HTTPError(503, "the gateway is shutting down", "gateway_stopping")
            app = self._register(name, await self._read_body(scope, receive, admin=True))
            body = {"name": app.name, "revision": app.revision, "fingerprint": app.fingerprint}
            await send_response(send, 200, dump(body))
        elif method == "DELETE":
            if not self.scheduler.remove(name):
                known = ", ".join(sorted(self.scheduler.apps)) or "none"
                raise HTTPError(404, f"no app named {name!r}; apps: {known}", "app_not_found")
            await send_response(send, 200, dump({"name": name, "removed": True}))
        else:
            raise HTTPError(405, f"{method} is not allowed on /-/apps/{name}")

    def _replace_certificate(self, raw: bytes) -> dict[str, Any]:
        """`PUT /-/tls`: a renewed certificate, and the public URL once the address is known.

        A gateway started on a machine whose address nobody knew beforehand (a
        SkyPilot cluster) gets a certificate naming that address, and its public
        URL, from `apply`. The pair is checked before anything is written; the
        server loads the new files within seconds.
        """
        from skyform.tlscontext import TLSError, server_context

        try:
            payload = json.loads(raw)
        except ValueError:
            raise HTTPError(400, "request body must be JSON") from None
        known = ["cert_pem", "key_pem", "public_url"]
        if not isinstance(payload, dict) or set(payload) - set(known):
            extra = sorted(set(payload) - set(known)) if isinstance(payload, dict) else []
            hint = did_you_mean(extra[0], known) if extra else ""
            raise HTTPError(400, f"body must be an object of {', '.join(known)}{hint}")
        cert, key = payload.get("cert_pem"), payload.get("key_pem")
        if self.tls_files is None:
            raise HTTPError(409, "this gateway serves plain http; it has no certificate to replace")
        if not (isinstance(cert, str) and cert and isinstance(key, str) and key):
            raise HTTPError(400, "cert_pem and key_pem (PEM text) are required")
        url = payload.get("public_url")
        if url is not None and (
            not isinstance(url, str) or not url.startswith(("http://", "https://"))
        ):
            raise HTTPError(400, f"public_url must be an http(s) URL, got {url!r}")
        cert_path, key_path = self.tls_files
        trial_cert, trial_key = self.state_dir / ".tls-trial.pem", self.state_dir / ".tls-trial.key"
        try:
            write_atomic(trial_cert, cert)
            write_atomic(trial_key, key, mode=0o600)
            server_context(trial_cert, trial_key)
        except TLSError as exc:
            raise HTTPError(400, f"certificate refused: {exc}", "bad_certificate") from None
        finally:
            for trial in (trial_cert, trial_key):
                trial.unlink(missing_ok=True)
        write_atomic(key_path, key, mode=0o600, fsync=True)
        write_atomic(cert_path, cert, fsync=True)
        if url and not self.public_url_configured:
            self.public_url = PublicURL(url, self.trusted_proxies)
            write_atomic(self.state_dir / PUBLIC_URL_FILE, url + "\n")  # kept across restarts
        log.info("certificate replaced%s", f"; public URL {url}" if url else "")
        return {"replaced": True, "public_url": self.public_url.base if self.public_url else None}

    def _register(self, name: str, raw: bytes) -> AppState:
        from skyform.bundle import read_bundle_meta

        problem = app_name_problem(name)
        if problem:
            raise HTTPError(400, problem, "invalid_app_name")
        try:
            payload = json.loads(raw)
        except ValueError:
            raise HTTPError(400, "request body must be JSON") from None
        if not isinstance(payload, dict):
            raise HTTPError(400, "request body must be a JSON object")
        fields = ["bundle_b64", "auth", "env", "secrets", "replace"]
        unknown = set(payload) - set(fields)
        if unknown:
            key = sorted(unknown)[0]
            raise HTTPError(400, f"unknown field {key!r}{did_you_mean(key, fields)}")
        replace = payload.get("replace", False)
        if not isinstance(replace, bool):
            raise HTTPError(400, "replace must be true or false")
        bundle_b64 = payload.get("bundle_b64")
        if not isinstance(bundle_b64, str) or not bundle_b64:
            raise HTTPError(400, "bundle_b64 (the base64 of a signed bundle) is required")
        try:
            data = base64.b64decode(bundle_b64, validate=True)
        except (binascii.Error, ValueError):
            raise HTTPError(400, "bundle_b64 is not valid base64") from None
        try:
            meta = read_bundle_meta(data, self.bundle_key, check_python=False)
        except SkyformError as exc:
            raise HTTPError(400, f"bundle refused: {exc}", "bundle_refused") from None
        auth = payload.get("auth") or meta.get("options", {}).get("auth") or "private"
        if auth not in ("private", "public"):
            raise HTTPError(400, f'auth must be "private" or "public", got {auth!r}')
        env = _string_map(payload, "env")
        secrets = _string_map(payload, "secrets")
        if secrets and self.store.sealer is None:
            raise HTTPError(400, "this gateway has no bundle key to seal secrets with")
        return self.scheduler.register(name, data, meta, auth, env, secrets, replace=replace)

    def _logs(self, app: AppState, tail: int, every: bool = False) -> str:
        """The app's runner log lines, merged by time, the last `tail` of them in all.

        Only the runners of the current revision (live or ended) unless `every`:
        after a few rollouts the old ones would bury what matters. Each line
        says when, which runner, and (inside a request) which request.
        """
        from skyform.logformat import utc_stamp

        lines: list[tuple[str, int, str]] = []
        for runner in [*app.retired, *app.runners.values()]:
            if not every and runner.generation != app.generation:
                continue
            log_path = runner.handle.info.get("log") if runner.handle else None
            raw: list[str] = []
            if log_path:
                try:
                    raw = Path(str(log_path)).read_text(errors="replace").splitlines()
                except OSError:
                    raw = []
            when = utc_stamp(runner.started)
            for text in raw:
                if not text.strip():
                    continue
                when, line = _runner_log_line(runner.id, text, when)
                lines.append((when, len(lines), line))
            if runner.error:
                lines.append((when, len(lines), f"{when} {runner.id} ERROR gateway {runner.error}"))
        lines.sort()
        shown = [line for _w, _i, line in lines[-tail:]] if tail else []
        return "".join(line + "\n" for line in shown)

    # --- helpers ------------------------------------------------------------

    def _app(self, name: str) -> AppState:
        app = self.scheduler.apps.get(name)
        if app is None:
            # Names only what was asked: listing (or suggesting) other apps
            # would show an anonymous caller every private app of the stack.
            raise HTTPError(404, f"no app named {name!r}", "app_not_found")
        return app

    def _request(self, app: AppState, request_id: str) -> StoredRequest:
        req = self.scheduler.find(request_id)
        if req is None or req.app != app.name:
            raise HTTPError(
                404, f"no request {request_id} for app {app.name!r}", "request_not_found"
            )
        return req

    def _endpoint(self, app: AppState, path: str, method: str, queue: bool = False) -> str:
        ep_method = app.endpoint_method(path)
        if ep_method is None:
            paths = ", ".join(e["path"] for e in app.meta.get("endpoints", []))
            raise HTTPError(
                404,
                f"app {app.name!r} has no endpoint {path}; endpoints: {paths}",
                "endpoint_not_found",
            )
        if ep_method == "WEBSOCKET":
            raise HTTPError(
                405, f"{path} of {app.name!r} is a websocket endpoint: open a websocket to it"
            )
        if not queue and method != ep_method:
            raise HTTPError(405, f"{path} of {app.name!r} takes {ep_method}, not {method}")
        if queue and method not in ("POST", ep_method):
            raise HTTPError(405, f"queue submissions are POST, not {method}")
        return ep_method

    def _check_caller(self, scope: Scope, app: AppState) -> None:
        if app.auth == "public":
            return
        given = _header(scope, b"authorization") or ""
        scheme, _, key = given.partition(" ")
        ok = (
            bool(self.api_key)
            and scheme.lower() in ("bearer", "key")
            and hmac.compare_digest(key.strip().encode(), self.api_key.encode())
        )
        if not ok:
            raise HTTPError(
                401,
                f"app {app.name!r} is private: send Authorization: Bearer <API key>",
                "unauthorized",
            )


# --- ASGI helpers -------------------------------------------------------------


def _string_map(payload: dict[str, Any], field: str) -> dict[str, str]:
    value = payload.get(field) or {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise HTTPError(400, f"{field} must be an object of string to string")
    return value


def _runner_log_line(runner_id: str, text: str, last_time: str) -> tuple[str, str]:
    """A runner's log line as `skyform logs` shows it: time, runner, level, source, request id.

    A line without the runner's stamp (a C library writing to the file itself,
    say) takes the time of the line before it.
    """
    from skyform.logformat import LINE_RE, NO_REQUEST

    match = LINE_RE.match(text)
    if match is None:
        return last_time, f"{last_time} {runner_id} {text}"
    rid = match["request_id"]
    request = f" [{rid}]" if rid and rid != NO_REQUEST else ""
    when = match["time"]
    return (
        when,
        f"{when} {runner_id} {match['level']} {match['logger']}{request} {match['message']}",
    )


def _wait_seconds(scope: Scope) -> float:
    """The `wait` query parameter of a long poll: seconds, 0 to `MAX_APPS_WAIT_S` (capped)."""
    query = parse_qs(scope.get("query_string", b"").decode())
    raw = query.get("wait", ["0"])[0]
    try:
        wait = float(raw)
    except ValueError:
        wait = math.nan
    if not math.isfinite(wait) or wait < 0:
        raise HTTPError(400, f"wait must be a number of seconds (0 or more), got {raw!r}")
    return min(wait, MAX_APPS_WAIT_S)


def _content_length(scope: Scope) -> int | None:
    raw = _header(scope, b"content-length")
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise HTTPError(400, f"content-length {raw!r} is not a number") from None
    if value < 0:
        raise HTTPError(400, f"content-length {raw!r} is negative")
    return value


def _too_large(limit: int, admin: bool = False) -> HTTPError:
    # connection: close -- the rest of the body is not read, so the connection cannot be reused.
    where = "the admin API's bound" if admin else "gateway.limits.max_body_bytes"
    return HTTPError(
        413,
        f"request body is larger than {limit} bytes ({where})",
        "body_too_large",
        headers=[(b"connection", b"close")],
    )


def _budget_spent(budget: BodyBudget) -> HTTPError:
    return HTTPError(
        503,
        f"the gateway holds {budget.used} bytes of request bodies, its bound is {budget.limit} "
        "(gateway.limits.max_inflight_body_bytes): retry later",
        "gateway_busy",
        headers=[(b"retry-after", b"%d" % RETRY_AFTER_S), (b"connection", b"close")],
    )


def _idempotency_key(scope: Scope) -> str | None:
    key = _header(scope, IDEMPOTENCY_HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY or not key.isprintable() or not key.isascii():
        raise HTTPError(
            400,
            f"{IDEMPOTENCY_HEADER.decode()} must be 1-{MAX_IDEMPOTENCY_KEY} printable ASCII "
            "characters",
            "invalid_idempotency_key",
        )
    return key


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _with_query(path: str, scope: Scope) -> str:
    query = scope.get("query_string", b"")
    if b"fal_webhook" in query:  # the gateway's, not the endpoint's
        pairs = parse_qs(query.decode("latin-1"), keep_blank_values=True)
        pairs.pop("fal_webhook", None)
        query = urlencode(pairs, doseq=True).encode("latin-1")
    return f"{path}?{query.decode('latin-1')}" if query else path


# --- process ------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m skyform.runtime.gateway", description="Run a stack's gateway."
    )
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    parser.add_argument("--state-dir", type=Path, required=True, help="queue, bundles, runner logs")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--stack", default="default", help="the stack's name")
    parser.add_argument(
        CREDENTIALS_FLAG,
        dest="credentials_fd",
        type=int,
        default=None,
        help="read the keys (a JSON object) from this fd instead of the environment",
    )
    parser.add_argument("--tls-cert", type=Path, help="serve https with this PEM certificate")
    parser.add_argument("--tls-key", type=Path, help="the certificate's PEM key")
    parser.add_argument("--runner-cert", type=Path, help="PEM certificate handed to runners")
    parser.add_argument("--runner-key", type=Path, help="its PEM key")
    parser.add_argument(
        "--runner-ca", type=Path, help="CA that runner certificates are verified with"
    )
    parser.add_argument("--public-url", default="", help="base of returned URLs")
    parser.add_argument(
        "--trusted-proxy",
        action="append",
        default=[],
        help="IP/CIDR whose X-Forwarded-Proto/-Host are honoured (repeatable)",
    )
    return parser


def _tls_args(args: argparse.Namespace) -> TLSMaterial | None:
    """The runner TLS material of the command line: all three files, or none."""
    from skyform.tlscontext import runner_server_name

    given = [args.runner_cert, args.runner_key, args.runner_ca]
    if not any(given):
        return None
    if not all(given):
        raise SkyformError("--runner-cert, --runner-key and --runner-ca go together")
    for path in given:
        if not path.is_file():
            raise SkyformError(f"no such file: {path}")
    from skyform.tlscontext import server_context

    server_context(args.runner_cert, args.runner_key)  # runners would refuse to start with it
    return TLSMaterial(
        args.runner_cert.resolve(),
        args.runner_key.resolve(),
        args.runner_ca.resolve(),
        runner_server_name(args.stack),
    )


def _check_args(args: argparse.Namespace) -> None:
    """Bad TLS or URL arguments: one line, before anything is started."""
    import ipaddress

    from skyform.tlscontext import server_context

    if bool(args.tls_cert) != bool(args.tls_key):
        raise SkyformError("--tls-cert and --tls-key go together")
    if args.tls_cert:
        server_context(args.tls_cert, args.tls_key)  # raises TLSError naming the file
    for item in args.trusted_proxy:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise SkyformError(f"--trusted-proxy {item!r} is not an IP or CIDR") from None
    if args.public_url and not args.public_url.startswith(("http://", "https://")):
        raise SkyformError(f"--public-url must be an http(s) URL, got {args.public_url!r}")


def build_gateway(args: argparse.Namespace, environ: dict[str, str]) -> Gateway:
    """The gateway for `args` (see `_parser`), its provider and keys from `environ`."""
    from skyform.providers import create_provider

    _check_args(args)
    runner_tls = _tls_args(args)
    state_dir: Path = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    config: Any = "local"
    provider_file = state_dir / "provider.json"
    if provider_file.exists():
        try:
            config = json.loads(provider_file.read_text())
        except ValueError as exc:
            raise SkyformError(f"{provider_file} is not valid JSON: {exc}") from None
    provider = create_provider(config, stack=args.stack, runtime_dir=state_dir)
    from skyform.providers.local import LocalProvider

    if isinstance(provider, LocalProvider):
        provider.remove_stale_homes()
    admin_token = environ.get("SKYFORM_ADMIN_TOKEN") or _stored_admin_token(state_dir)
    if not environ.get("SKYFORM_BUNDLE_KEY"):
        log.warning("SKYFORM_BUNDLE_KEY is not set: no bundle can be registered")
    if not environ.get("SKYFORM_API_KEY"):
        log.warning("SKYFORM_API_KEY is not set: private apps refuse every caller")
    from skyform.runtime.webhooks import ENV_HOSTS, parse_hosts, webhook_key

    limits = GatewayLimits.from_environ(environ)
    return Gateway(
        state_dir=state_dir,
        stack=args.stack,
        provider=provider,
        admin_token=admin_token,
        api_key=environ.get("SKYFORM_API_KEY", ""),
        bundle_key=environ.get("SKYFORM_BUNDLE_KEY", ""),
        limits=limits,
        public_url=args.public_url
        or _learned_public_url(state_dir)
        or default_public_url("https" if args.tls_cert else "http", args.host, args.port),
        trusted_proxies=tuple(args.trusted_proxy),
        runner_tls=runner_tls,
        tls_files=(args.tls_cert.resolve(), args.tls_key.resolve()) if args.tls_cert else None,
        public_url_configured=bool(args.public_url),
        webhook_key=webhook_key(environ, state_dir),
        webhook_hosts=parse_hosts(environ.get(ENV_HOSTS)),
    )


def _learned_public_url(state_dir: Path) -> str:
    try:
        return (state_dir / PUBLIC_URL_FILE).read_text().strip()
    except OSError:
        return ""


def _stored_admin_token(state_dir: Path) -> str:
    """Without SKYFORM_ADMIN_TOKEN, a token generated once into `<state-dir>/admin-token` (0600)."""
    path = state_dir / "admin-token"
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    # Written whole, then renamed: a gateway killed mid-write leaves no empty token behind.
    write_atomic(path, token + "\n", mode=0o600)
    log.warning("SKYFORM_ADMIN_TOKEN is not set: generated one into %s", path)
    return token


def main(argv: list[str] | None = None) -> int:
    from skyform.runtime.gateway_server import make_server

    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    args = _parser().parse_args(argv)
    os.umask(0o077)  # queue, bundles, logs: the owner's only
    harden_process()
    try:
        environ = dict(os.environ)
        if args.credentials_fd is not None:
            keys = read_credentials(args.credentials_fd)
            environ.update({str(k): str(v) for k, v in keys.items() if v})
        gateway = build_gateway(args, environ)
    except SkyformError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    tls = (args.tls_cert, args.tls_key) if args.tls_cert else None
    server = make_server(gateway, args.host, args.port, gateway.limits, tls=tls)
    started = time.monotonic()
    scheme = "https" if tls else "http"
    log.info("gateway for stack %s on %s://%s:%d", args.stack, scheme, args.host, args.port)
    server.run()
    if not server.started:
        print(f"error: the gateway could not start on {args.host}:{args.port}", file=sys.stderr)
        return 1
    log.info("gateway exits after %.1fs", time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
