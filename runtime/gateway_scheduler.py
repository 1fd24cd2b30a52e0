"""The gateway's scheduler: which runner serves which request, and when runners come and go.

Everything here runs on the gateway's event loop; state changes happen between
awaits, so no locks are needed. Provider calls (which may block: building an
environment, launching a cluster, waiting for a process) run in threads.

The scheduler coordinates; the rules live in pure modules it calls, each
tested without processes:
- `gateway_model`: requests, runners (`RunnerState`) and apps.
- `scaling`: which runner serves, how many to start (scale from zero, queued
  work beyond free capacity up to `max_runners`, never below `min_runners`),
  which idle ones stop (`keep_alive`), rolling revisions (new runners first;
  old ones serve until one new runner is ready, then drain and stop), and the
  backoff after a failed start (after `START_FAILURE_LIMIT` failures in a row,
  or one environment build failure, waiting requests fail with the reason).
- `retry`: the DESIGN §7 status table (503 -> runner ends, retried elsewhere;
  504 -> retried, runner kept; unreachable -> retried; everything else is the
  answer; at most `MAX_ATTEMPTS`; `x-skyform-no-retry: 1` = one attempt).
- `runner_lifecycle`: connecting to a runner, waiting for its health, draining.

Requests wait in their app's FIFO until a ready runner has a free slot
(`max_multiplexing`). Delivery is at-least-once: an attempt is committed to
the store before it is dispatched, so a gateway that dies with it in flight
runs it again after its restart, with the attempt counted (the bound holds
across restarts). A request in flight at `poison_after_deaths` gateway deaths
in a row fails as `poisoned` instead of taking the gateway down forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from skyform.bundle import unverified_meta
from skyform.errors import BundleError, SkyformError
from skyform.files import private_dir, write_atomic
from skyform.options import option_or_default
from skyform.providers.base import (
    CapacityUnavailable,
    Provider,
    RunnerHandle,
    RunnerSpec,
    TLSMaterial,
)
from skyform.runtime.gateway_client import (
    RunnerConnectionError,
    RunnerResponse,
)
from skyform.runtime.gateway_metrics import RUNNER_STATES, GatewayMetrics
from skyform.runtime.gateway_stream import is_event_stream, read_stream, stored_events
from skyform.runtime.limits import GatewayLimits
from skyform.runtime.queue_store import QueueStore, StoredApp, StoredRequest
from skyform.runtime.request_logs import LOGS_HEADER, decode_logs
from skyform.runtime.retry import MAX_ATTEMPTS, Action, Decision, Outcome, RunnerFate, decide
from skyform.runtime.runner_context import REQUEST_ID_HEADER
from skyform.runtime.runner_errors import ERROR_TYPE_HEADER
from skyform.runtime.webhooks import payload as webhook_payload

from .gateway_changes import Changes
from .gateway_model import (
    ACTIVE,
    AppLimits,
    AppState,
    LiveRequest,
    Runner,
    RunnerState,
    generation_of,
)
from .runner_lifecycle import RunnerLifecycle

# Relative, so that the type checker sees these classes (it cannot follow the
# package-dir mapping behind `skyform.runtime`).
from .scaling import gives_up, idle_to_stop, pick, scale_up, start_backoff, to_drain

log = logging.getLogger("skyform.gateway")

CAPACITY_RETRY_S = 1.0  # how soon a runner that found no free GPU tries again
REAP_INTERVAL_S = 0.2
PRUNE_INTERVAL_S = 300.0  # at most; shorter for a short result_ttl
COMPACT_INTERVAL_S = 1.0
PROVIDER_THREADS = 64
TIMEOUT_MARGIN_S = 5.0
MAX_HINTS = 256  # runner hints remembered per runner

# The HTTP status a caller sees for a request the gateway itself failed.
ERROR_STATUS = {
    "runner_unavailable": 503,
    "max_attempts_exceeded": 503,
    "startup_failed": 503,
    "environment_build_failed": 503,
    "timeout": 504,
    "request_timeout": 504,  # did not start within X-Fal-Request-Timeout
    "cancelled": 409,
    "app_removed": 410,
    "poisoned": 500,
}


class RequestNotCancellable(SkyformError):
    """The request is already running or finished."""


class Scheduler:
    """Queues, dispatches, retries and scales, for every app of one gateway."""

    def __init__(
        self,
        *,
        store: QueueStore,
        provider: Provider,
        metrics: GatewayMetrics,
        stack: str,
        state_dir: Path,
        bundle_key: str = "",
        limits: GatewayLimits | None = None,
        runner_tls: TLSMaterial | None = None,
    ) -> None:
        self.store = store
        self.gateway_limits = limits or GatewayLimits()
        self.provider = provider
        self.metrics = metrics
        self.stack = stack
        self.state_dir = Path(state_dir)
        self.bundle_key = bundle_key  # handed to each runner, on its credentials pipe
        self.runner_tls = runner_tls
        self.lifecycle = RunnerLifecycle(provider, runner_tls)
        self.apps: dict[str, AppState] = {}
        self.live: dict[str, LiveRequest] = {}
        self.closing = False
        # Guards handing a started runner over to the scheduler against shutdown
        # and removal, which run on the event loop while a start runs in a thread.
        self._handover = threading.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._orphans: set[Runner] = set()  # runners of removed apps, draining
        self._reaper: asyncio.Task[None] | None = None
        self._last_liveness = 0.0
        self._last_prune = 0.0
        self._last_compact = 0.0
        # Called after a completed request queued a webhook POST (the sender wakes up).
        self.on_webhook: Callable[[], None] | None = None
        # Notified when an app or runner changes state: `GET /-/apps?wait=S` answers then.
        self.changes = Changes()

    # --- lifecycle ----------------------------------------------------------

    async def start(self) -> None:
        """Load registered apps and every accepted-but-unfinished request; start scaling."""
        # Provider calls run in threads and some last minutes (an environment
        # build, a cloud launch): the default pool (cores + 4) would let a few
        # slow starts hold up every liveness check and stop.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(PROVIDER_THREADS, thread_name_prefix="skyform-provider")
        )
        stored_apps = self.store.load_apps()
        for name, error in self.store.load_errors.items():
            log.error("app %s: not loaded: %s", name, error)
        for stored in stored_apps:
            try:
                # Verified at registration; this is the gateway's own copy.
                meta = unverified_meta(stored.bundle_path.read_bytes())
            except (OSError, BundleError) as exc:
                log.error("app %s: cannot reload its bundle: %s", stored.name, exc)
                continue
            self.apps[stored.name] = AppState(
                name=stored.name,
                meta=meta,
                auth=stored.auth,
                env=stored.env,
                bundle_path=stored.bundle_path,
                generation=generation_of(meta["revision"], stored.env, stored.secrets),
                secrets=stored.secrets,
            )
        poison_after = self.gateway_limits.poison_after_deaths
        for open_request in self.store.open_requests():
            app = self.apps.get(open_request.app)
            req = LiveRequest(**open_request.__dict__)
            if req.status == "IN_PROGRESS":
                # In flight when the previous gateway process died: it may have
                # run (at-least-once); it runs again unless that keeps happening.
                req.deaths += 1
                req.status = "IN_QUEUE"
                self.store.requeue(req)
            req.status = "IN_QUEUE"
            if app is None:
                self._complete_error(
                    req, "app_removed", f"app {open_request.app!r} is not registered"
                )
                continue
            if req.deaths >= poison_after:
                self._complete_error(
                    req,
                    "poisoned",
                    f"the gateway died {req.deaths} times in a row while this request was "
                    f"in flight (after {req.attempts} attempts); it is not retried again",
                )
                continue
            if req.attempts >= MAX_ATTEMPTS:
                self._complete_error(
                    req,
                    "max_attempts_exceeded",
                    f"gave up after {req.attempts} attempts; the last was cut short "
                    "by the gateway's death",
                )
                continue
            self.live[req.id] = req
            app.pending.append(req)
            app.queued_bytes += req.size
        for app in self.apps.values():
            self._pump(app)
        self._reaper = asyncio.create_task(self._reap_loop())

    async def close(self) -> None:
        """Stop every runner (they finish in-flight work first). Unfinished requests stay queued."""
        with self._handover:
            self.closing = True
        if self._reaper:
            self._reaper.cancel()
        for app in self.apps.values():
            if app.kick_handle:
                app.kick_handle.cancel()
        runners = [r for app in self.apps.values() for r in app.runners.values()]
        runners += list(self._orphans)
        await asyncio.gather(
            *(self._stop(r, RunnerState.STOPPED) for r in runners), return_exceptions=True
        )
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # A stop is not a death: what was cut short waits queued, its deaths uncounted.
        for req in self.live.values():
            if req.persist and req.status == "IN_PROGRESS":
                req.status = "IN_QUEUE"
                self.store.requeue(req)

    # --- apps ---------------------------------------------------------------

    def register(
        self,
        name: str,
        data: bytes,
        meta: dict[str, Any],
        auth: str,
        env: dict[str, str],
        secrets: dict[str, str] | None = None,
        replace: bool = False,
    ) -> AppState:
        """Add or update an app. A new generation rolls; same generation updates in place.

        `replace` (`plan --replace APP`) rolls even the same revision: its runners
        are a new generation of their own, so the old ones drain like any other.
        """
        secrets = dict(secrets or {})
        folder = private_dir(self.state_dir / "bundles" / name)
        path = folder / f"{meta['fingerprint']}.bundle"
        if not path.exists():
            write_atomic(path, data, mode=0o600)
        generation = generation_of(meta["revision"], env, secrets)
        if replace:
            salted = f"{generation}:{os.urandom(8).hex()}".encode()
            generation = hashlib.sha256(salted).hexdigest()[:16]
        app = self.apps.get(name)
        fresh = app is None or app.generation != generation
        if app is None:
            app = AppState(name, meta, auth, env, path, generation, secrets=secrets)
            self.apps[name] = app
        else:
            app.meta, app.auth, app.env, app.bundle_path = meta, auth, env, path
            app.secrets = secrets
            app.limits = AppLimits.of(meta)
            if app.generation != generation or app.failures:
                # A new generation starts afresh; so does registering a failing one
                # again (apply repairing a tainted app): it is tried at once.
                app.generation = generation
                app.failures, app.next_start_at = 0, 0.0
                app.last_error = app.last_error_type = None
        self.store.save_app(
            StoredApp(name, meta["revision"], meta["fingerprint"], auth, env, path, secrets)
        )
        if fresh:
            self._spawn(self._prepare(app, generation))
        self.changes.notify()
        self._pump(app)
        return app

    async def _prepare(self, app: AppState, generation: str) -> None:
        """Get a new revision's runner environment ready before its first request needs it.

        The first request then does not wait for a build, and a build that fails
        shows at once as the app's `last_error` (`skyform status`), not only when
        a request arrives.
        """
        try:
            await asyncio.to_thread(self.provider.prepare_runner, self._runner_spec(app))
        except Exception as exc:
            if self.apps.get(app.name) is not app or app.generation != generation:
                return
            log.warning("app %s: cannot prepare runners: %s", app.name, exc)
            app.last_error, app.last_error_type = str(exc), _start_error_type(exc)
            self.changes.notify()

    def remove(self, name: str) -> bool:
        app = self.apps.pop(name, None)
        if app is None:
            return False
        self.store.delete_app(name)
        if app.kick_handle:
            app.kick_handle.cancel()
        while app.pending:
            req = app.pending.popleft()
            self._complete_error(req, "app_removed", f"app {name!r} was removed")
        for runner in list(app.runners.values()):
            self._orphans.add(runner)
            self._spawn(self._drain_and_stop(app, runner))
        self.changes.notify()
        return True

    # --- requests -----------------------------------------------------------

    def submit(
        self,
        app: AppState,
        path: str,
        method: str,
        body: bytes,
        content_type: str,
        *,
        no_retry: bool,
        persist: bool,
        idem_key: str | None = None,
        hint: str | None = None,
        start_timeout: float | None = None,
        webhook_url: str | None = None,
        kind: str = "http",
    ) -> LiveRequest:
        """Accept a request. With `persist`, it is durable when this returns.

        `start_timeout` bounds the time until an attempt starts (queue wait and
        retries); `hint` prefers a runner that served the same hint.
        """
        created = time.time()
        req = LiveRequest(
            id=_request_id(),
            app=app.name,
            path=path,
            method=method,
            body=body,
            content_type=content_type,
            no_retry=no_retry,
            status="IN_QUEUE",
            attempts=0,
            created=created,
            persist=persist,
            idem_key=idem_key,
            hint=hint,
            start_deadline=created + start_timeout if start_timeout else None,
            webhook_url=webhook_url,
            kind=kind,
        )
        if persist:
            self.store.add_request(req)
            # Stored: the body waits on disk, not in memory, until its dispatch.
            req.size, req.body = len(body), b""
            app.queued_bytes += req.size
        self.live[req.id] = req
        app.pending.append(req)
        self.metrics.submitted.labels(app.name, "queue" if persist else "sync").inc()
        self._pump(app)
        return req

    def find(self, request_id: str) -> StoredRequest | None:
        return self.live.get(request_id) or self.store.get_request(request_id)

    def find_by_idempotency_key(self, app: str, key: str) -> StoredRequest | None:
        """`app`'s request first submitted with idempotency `key`, while its result is kept."""
        request_id = self.store.find_by_idempotency_key(app, key)
        return self.find(request_id) if request_id else None

    def queue_position(self, req: StoredRequest) -> int | None:
        app = self.apps.get(req.app)
        if app is None or req.status != "IN_QUEUE":
            return None
        for i, queued in enumerate(app.pending):
            if queued is req:
                return i
        return None

    def cancel(self, request_id: str) -> StoredRequest:
        req = self.find(request_id)
        if req is None:
            raise KeyError(request_id)
        app = self.apps.get(req.app)
        if req.status != "IN_QUEUE" or app is None or not isinstance(req, LiveRequest):
            raise RequestNotCancellable(req.status)
        with contextlib.suppress(ValueError):
            app.pending.remove(req)
        self._complete_error(req, "cancelled", "cancelled by the caller before it ran")
        return req

    def forget(self, req: LiveRequest) -> None:
        """A synchronous caller gave up: drop the request if it has not started."""
        app = self.apps.get(req.app)
        if req.status == "IN_QUEUE" and app is not None:
            with contextlib.suppress(ValueError):
                app.pending.remove(req)
            self._complete_error(
                req, "timeout", "no runner answered within the synchronous call's bound"
            )

    # --- dispatch -----------------------------------------------------------

    def _pump(self, app: AppState) -> None:
        """Hand queued requests to free runner slots, then start runners if needed."""
        if self.closing or self.apps.get(app.name) is not app:
            return
        slots = app.limits.max_multiplexing
        while app.pending:
            req = app.pending[0]
            if req.start_deadline is not None and time.time() >= req.start_deadline:
                app.pending.popleft()
                self._start_timed_out(req)
                continue
            runner = pick(app.runners.values(), app.generation, slots, req.hint)
            if runner is None:
                break
            app.pending.popleft()
            runner.in_flight += 1
            self._spawn(self._attempt(app, req, runner))
        self._scale(app)

    def _scale(self, app: AppState) -> None:
        """Start the runners the scaling policy asks for (or come back when its backoff ends)."""
        now = time.monotonic()
        decision = scale_up(
            app.runners.values(),
            app.generation,
            len(app.pending),
            app.limits,
            now,
            app.next_start_at,
        )
        if decision.count <= 0:
            app.waiting = None  # no runner wanted that could be waiting
        elif decision.after > 0:
            self._kick_later(app, decision.after)
        else:
            for _ in range(decision.count):
                self._start_runner(app)

    def _kick_later(self, app: AppState, delay: float) -> None:
        if app.kick_handle is not None and not app.kick_handle.cancelled():
            app.kick_handle.cancel()
        loop = asyncio.get_running_loop()
        app.kick_handle = loop.call_later(delay + 0.01, self._pump, app)

    async def _attempt(self, app: AppState, req: LiveRequest, runner: Runner) -> None:
        req.attempts += 1
        if req.started is None:
            req.started = time.time()
            self.metrics.queue_seconds.labels(app.name).observe(req.started - req.created)
        req.status = "IN_PROGRESS"
        if req.persist:
            self.store.start_attempt(req)  # committed before the runner sees it
        req.runner = runner
        if req.hint is not None:
            runner.hints.pop(req.hint, None)
            runner.hints[req.hint] = None
            if len(runner.hints) > MAX_HINTS:
                del runner.hints[next(iter(runner.hints))]
        timeout = app.limits.request_timeout
        headers = {"content-type": req.content_type, REQUEST_ID_HEADER: req.id}
        body = self.store.get_body(req.id) if req.persist else req.body
        reason = ""
        answer: tuple[int, dict[str, str], bytes] | None = None
        assert runner.client is not None
        handed = False
        try:
            if req.kind == "websocket":
                handed = True
                await self._lend(req, runner)
            else:
                # The runner enforces request_timeout itself (504, then it ends);
                # the margin lets its answer arrive before the gateway gives up.
                response = await runner.client.open(
                    req.method, req.path, body, headers, timeout + TIMEOUT_MARGIN_S
                )
                if not response.streaming or response.status in (503, 504):
                    answer = (response.status, response.headers, await _read(response, timeout))
                elif not req.persist and req.waiting:
                    handed = True
                    await self._hand_over(app, req, runner, response)
                else:
                    answer = await self._read_stream(app, req, runner, response)
        except RunnerConnectionError as exc:
            reason = f"runner {runner.id} unreachable: {exc}"
        except TimeoutError:
            reason = "timeout"
        finally:
            req.runner = None
            runner.in_flight -= 1
            runner.served += 1
            runner.idle_since = time.monotonic()
        if handed:
            self._pump(app)
            return
        if self.closing and answer is None:
            # The gateway is stopping (not dying): the request stays queued in the store.
            if req.persist:
                self.store.requeue(req)
            return
        if answer is not None and LOGS_HEADER in answer[1]:
            req.logs = [*(req.logs or []), *decode_logs(answer[1][LOGS_HEADER])]
        status = answer[0] if answer is not None else None
        error_type = answer[1].get(ERROR_TYPE_HEADER) if answer is not None else None
        timed_out = answer is None and reason == "timeout"
        decision = decide(Outcome(status, error_type, timed_out, req.attempts, req.no_retry))
        # In words: why the runner goes (if it does), and how the attempt ended.
        why = detail = reason  # no answer: the runner was lost for this reason
        if timed_out:
            why = "no answer past request_timeout: wedged"
            detail = f"the endpoint did not answer within request_timeout ({timeout:g}s)"
        elif answer is not None and decision.error_type == "timeout":
            why = "a request overran request_timeout"
            detail = _error_detail(answer[2]) or "request timed out"
        elif answer is not None:
            why = "answered 503: unhealthy, ending itself"  # the one other answer a runner ends on
            detail = f"runner {runner.id} answered {status}"
        self._carry_out(app, req, runner, decision, why, detail, answer)
        self._pump(app)

    async def _hand_over(
        self, app: AppState, req: LiveRequest, runner: Runner, response: RunnerResponse
    ) -> None:
        """Give a streamed response to its synchronous caller; wait until it is forwarded.

        From here on the request is not retried (bytes reach the caller). The
        runner keeps its slot until the stream ends.
        """
        req.stream, req.released = response, asyncio.Event()
        req.done.set()  # wakes the caller; the request stays IN_PROGRESS meanwhile
        try:
            await req.released.wait()
        finally:
            response.close()
            req.stream = None
        decision = decide(
            Outcome(None if req.outcome == "broken" else response.status, streamed=True)
        )
        if decision.runner is not RunnerFate.KEEP:
            self._runner_lost(
                app, runner, RunnerState(decision.runner), "the connection broke mid-stream"
            )
        req.result_status, req.result_type = response.status, response.headers.get("content-type")
        self._finish(req, "success" if response.status < 400 else "app_error")

    async def _read_stream(
        self, app: AppState, req: LiveRequest, runner: Runner, response: RunnerResponse
    ) -> tuple[int, dict[str, str], bytes]:
        """A streamed response read whole, for the queue (see `gateway_stream`)."""
        body, broke = await read_stream(response, app.limits.request_timeout + TIMEOUT_MARGIN_S)
        headers = dict(response.headers)
        if broke is not None:
            self._runner_lost(app, runner, RunnerState.FAILED, broke)
            if not is_event_stream(headers.get("content-type")):
                return 502, {"content-type": "application/json"}, _error_json(broke, req.id)
        if is_event_stream(headers.get("content-type")):
            body = stored_events(body, broke)
            headers["content-type"] = "application/json"
        return response.status, headers, body

    async def _lend(self, req: LiveRequest, runner: Runner) -> None:
        """Lend `runner` to a websocket caller; wait until its socket closes."""
        req.lent, req.released = runner, asyncio.Event()
        req.done.set()
        try:
            await req.released.wait()
        finally:
            req.lent = None

    def websocket_ended(self, req: LiveRequest, runner: Runner, outcome: str) -> None:
        """A lent websocket closed; apply the runner-fate rules to how it ended.

        `outcome`: "unreachable" (the runner could not be reached: retried on
        another one), "unhealthy" (the runner closed with 1013: it is ending
        itself), anything else: the runner is fine.
        """
        app = self.apps.get(req.app)
        if app is None:
            self._finish(req, "app_removed")
            return
        if outcome == "unreachable":
            decision = decide(Outcome(None, attempts=req.attempts, no_retry=req.no_retry))
            req.done.clear()
            detail = f"runner {runner.id} unreachable (websocket)"
            self._carry_out(app, req, runner, decision, "its websocket could not be opened", detail)
            return
        if outcome == "unhealthy":
            # The socket was open: bytes reached the caller, so it is not retried.
            decision = decide(Outcome(503, streamed=True))
            why = "closed a websocket with 1013: unhealthy"
            self._runner_lost(app, runner, RunnerState(decision.runner), why)
        self._finish(req, "app_error" if outcome in ("unhealthy", "app_error") else "success")

    def _carry_out(
        self,
        app: AppState,
        req: LiveRequest,
        runner: Runner,
        decision: Decision,
        why: str,
        detail: str,
        answer: tuple[int, dict[str, str], bytes] | None = None,
    ) -> None:
        """Do what the retry policy decided: the runner's fate first, then the request's.

        `why`: the runner's fate in words (logged, kept as its error); `detail`:
        the attempt's end in words (the request's error if it fails).
        """
        if decision.runner is not RunnerFate.KEEP:
            self._runner_lost(app, runner, RunnerState(decision.runner), why)
        if decision.error_type == "timeout":
            self._complete_error(req, "timeout", detail)
            return
        if decision.action is Action.RETURN:
            assert answer is not None
            self._complete_answer(req, answer)
            return
        req.last_answer = detail
        if decision.error_type == "runner_unavailable":
            self._complete_error(req, "runner_unavailable", f"{detail} (retries are off)")
        elif decision.error_type == "max_attempts_exceeded":
            self._complete_error(
                req,
                "max_attempts_exceeded",
                f"gave up after {req.attempts} attempts; the last: {detail}",
                answer[0] if answer else None,
            )
        elif self.apps.get(app.name) is not app:
            self._complete_error(req, "app_removed", f"app {app.name!r} was removed")
        elif req.start_deadline is not None and time.time() >= req.start_deadline:
            self._start_timed_out(req, f"; the last attempt: {detail}")
        else:
            self.metrics.retries.labels(app.name, decision.reason).inc()
            req.status = "IN_QUEUE"
            if req.persist:
                req.deaths = 0  # this attempt ended with the gateway alive
                self.store.requeue(req)
            app.pending.appendleft(req)

    # --- completion ---------------------------------------------------------

    def _complete_answer(self, req: LiveRequest, answer: tuple[int, dict[str, str], bytes]) -> None:
        status, headers, body = answer
        req.result_status = status
        req.result_body = body
        req.result_type = headers.get("content-type", "application/json")
        if status >= 400:
            req.error = _error_detail(body) or f"the endpoint answered {status}"
            req.error_type = headers.get(ERROR_TYPE_HEADER) or (
                "validation_error"
                if status == 422
                else "app_error"
                if status >= 500
                else "client_error"
            )
            outcome = "app_error" if status >= 500 else "client_error"
        else:
            outcome = "success"
        self._finish(req, outcome)

    def _complete_error(
        self, req: LiveRequest, error_type: str, message: str, status: int | None = None
    ) -> None:
        req.error = message
        req.error_type = error_type
        req.result_status = status or ERROR_STATUS.get(error_type, 503)
        req.result_type = "application/json"
        req.result_body = json.dumps(
            {
                "detail": message,
                "error": message,
                "error_type": error_type,
                "request_id": req.id,
            }
        ).encode()
        self._finish(req, error_type)

    def _start_timed_out(self, req: LiveRequest, last: str = "") -> None:
        """X-Fal-Request-Timeout ran out before an attempt started (fal answers 504)."""
        assert req.start_deadline is not None
        bound = req.start_deadline - req.created
        self._complete_error(
            req,
            "request_timeout",
            f"the request did not start within its X-Fal-Request-Timeout ({bound:g}s){last}",
        )

    def _expire_waiting(self, app: AppState) -> None:
        """Fail queued requests whose X-Fal-Request-Timeout has run out."""
        now = time.time()
        expired = [
            r for r in app.pending if r.start_deadline is not None and now >= r.start_deadline
        ]
        for req in expired:
            with contextlib.suppress(ValueError):
                app.pending.remove(req)
            self._start_timed_out(req)

    def _finish(self, req: LiveRequest, outcome: str) -> None:
        req.status = "COMPLETED"
        req.completed = time.time()
        self.live.pop(req.id, None)
        if req.persist:
            hook = None
            if req.webhook_url:
                hook = webhook_payload(req.id, req.result_status, req.result_body, req.error)
            self.store.complete_request(req, hook)
            app = self.apps.get(req.app)
            if app is not None:
                app.queued_bytes = max(0, app.queued_bytes - req.size)
            req.body = b""
            if hook is not None and self.on_webhook is not None:
                self.on_webhook()
        self.metrics.requests.labels(req.app, outcome).inc()
        req.done.set()

    def _fail_waiting(self, app: AppState, error_type: str, message: str) -> None:
        """Fail every queued request of `app` that no ready runner could serve."""
        if any(r.state == RunnerState.READY for r in app.runners.values()):
            return
        while app.pending:
            self._complete_error(app.pending.popleft(), error_type, message)

    # --- runners ------------------------------------------------------------

    def _start_runner(self, app: AppState) -> Runner:
        runner = Runner(
            id=f"{app.name}-{secrets.token_hex(4)}",
            app=app.name,
            revision=app.revision,
            generation=app.generation,
            state=RunnerState.BUILDING,
            started=time.time(),
        )
        app.runners[runner.id] = runner
        self._spawn(self._bring_up(app, runner))
        self.changes.notify()
        return runner

    def _runner_spec(self, app: AppState, runner: Runner | None = None) -> RunnerSpec:
        options = app.options
        machine = option_or_default(options, "machine_type")
        env = {**app.env, "SKYFORM_APP_NAME": app.name}
        return RunnerSpec(
            stack=self.stack,
            app=app.name,
            revision=app.revision,
            bundle_path=app.bundle_path,
            machine_types=[machine] if isinstance(machine, str) else list(machine),
            requirements=list(app.meta.get("requirements", [])),
            python_version=str(app.meta.get("python", "")),
            env=env,
            runner_id=runner.id if runner else "",
            secrets=dict(app.secrets),
            bundle_key=self.bundle_key,
            runner_token=runner.token if runner else "",
            tls=self.runner_tls,
        )

    async def _bring_up(self, app: AppState, runner: Runner) -> None:
        spec = self._runner_spec(app, runner)

        def start() -> RunnerHandle | None:
            # In the start thread, so that a runner whose start outlives a shutdown
            # or a removal (the awaiting task is gone by then) is still stopped.
            handle = self.provider.start_runner(spec)
            with self._handover:
                if not self.closing and runner.state == RunnerState.BUILDING:
                    runner.handle = handle
                    return handle
            self.provider.stop_runner(handle, 2.0)
            return None

        try:
            handle = await asyncio.to_thread(start)
        except CapacityUnavailable as exc:
            self._wait_for_capacity(app, runner, str(exc))
            return
        except Exception as exc:
            message = f"runner {runner.id} could not start: {exc}"
            self._start_failed(app, runner, _start_error_type(exc), message)
            return
        if handle is None:  # removed or shut down meanwhile
            return
        runner.state = RunnerState.STARTING
        app.waiting = None
        self.changes.notify()
        try:
            runner.client = self.lifecycle.connect(runner, handle)
        except SkyformError as exc:
            self._start_failed(app, runner, "startup_failed", f"runner {runner.id}: {exc}")
            return
        failure = await self.lifecycle.wait_ready(runner, app.limits.startup_timeout)
        if failure is not None:
            self._start_failed(app, runner, "startup_failed", failure)
            return
        if runner.state != RunnerState.STARTING:
            return
        runner.state = RunnerState.READY
        runner.idle_since = time.monotonic()
        self.metrics.runner_starts.labels(app.name, "ready").inc()
        log.info("runner %s of %s is ready at %s", runner.id, app.name, runner.url)
        if self.apps.get(app.name) is not app:
            self._spawn(self._drain_and_stop(app, runner))
            return
        if runner.generation == app.generation:
            app.failures = 0
            for old in to_drain(app.runners.values(), app.generation):
                # Draining from this moment, not from when the task first runs:
                # once a new runner is ready no request may reach an old one.
                old.state = RunnerState.DRAINING
                self._spawn(self._drain_and_stop(app, old, marked=True))
        self.changes.notify()  # apply waits for this moment (`GET /-/apps?wait=S`)
        self._pump(app)

    def _wait_for_capacity(self, app: AppState, runner: Runner, message: str) -> None:
        """No room for the runner yet (its GPUs are in use): not a failure; try again soon.

        Queued requests stay queued (others may serve them meanwhile), and the
        app says why it waits (`waiting` in `/-/apps`, `skyform status`).
        """
        if app.waiting != message:
            log.info("app %s: %s", app.name, message)
        app.waiting = message
        self._retire(app, runner, RunnerState.STOPPED)
        with contextlib.suppress(ValueError):
            app.retired.remove(runner)  # it never ran: not a runner anyone needs to see
        if self.apps.get(app.name) is app:
            app.next_start_at = time.monotonic() + CAPACITY_RETRY_S
            self._pump(app)

    def _start_failed(self, app: AppState, runner: Runner, error_type: str, message: str) -> None:
        log.warning("app %s: %s", app.name, message)
        self.metrics.runner_starts.labels(app.name, error_type).inc()
        runner.error = message
        handle = runner.handle
        self._retire(app, runner, RunnerState.FAILED)
        if handle is not None:
            self._spawn(self.lifecycle.stop(handle, 2.0))
        if self.apps.get(app.name) is not app or runner.generation != app.generation:
            return
        app.failures += 1
        app.last_error, app.last_error_type = message, error_type
        self.changes.notify()
        app.next_start_at = time.monotonic() + start_backoff(app.failures)
        if gives_up(app.failures, error_type):
            detail = message
            if app.failures > 1:
                detail = f"{message} ({app.failures} failed starts in a row)"
            self._fail_waiting(app, error_type, detail)
        self._pump(app)

    def _runner_lost(self, app: AppState, runner: Runner, state: RunnerState, reason: str) -> None:
        if runner.state in (RunnerState.STOPPED, RunnerState.FAILED):
            return
        log.warning("runner %s of %s: %s", runner.id, app.name, reason)
        runner.error = reason if state == RunnerState.FAILED else None
        handle = runner.handle
        self._retire(app, runner, state)
        if handle is not None:
            self._spawn(self.lifecycle.stop(handle))

    def _retire(self, app: AppState, runner: Runner, state: RunnerState) -> None:
        runner.state = state
        self.changes.notify()
        if runner.client is not None:
            runner.client.close()
        if app.runners.pop(runner.id, None) is not None:
            app.retired.append(runner)
        self._orphans.discard(runner)

    async def _drain_and_stop(self, app: AppState, runner: Runner, marked: bool = False) -> None:
        """No new requests; wait for in-flight ones; then stop the runner.

        `marked`: the caller already set it draining (so no request was handed to
        it between that decision and this task's first step).
        """
        if runner.state not in ACTIVE and not (marked and runner.state == RunnerState.DRAINING):
            return
        runner.state = RunnerState.DRAINING
        self.changes.notify()
        await self.lifecycle.wait_drained(runner, app.limits.request_timeout + 5.0)
        await self._stop(runner, RunnerState.STOPPED, app)

    async def _stop(self, runner: Runner, state: RunnerState, app: AppState | None = None) -> None:
        with self._handover:
            handle = runner.handle
            if runner.state in (RunnerState.STOPPED, RunnerState.FAILED):
                return
            runner.state = RunnerState.DRAINING
        self.changes.notify()
        if handle is not None:
            await self.lifecycle.stop(handle)
        app = app or self.apps.get(runner.app)
        if app is not None:
            self._retire(app, runner, state)
        else:
            runner.state = state
            self.changes.notify()
        self._orphans.discard(runner)
        if app is not None:
            self._pump(app)

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(REAP_INTERVAL_S)
            try:
                await self._reap()
            except Exception:
                log.exception("scheduler housekeeping failed")

    async def _reap(self) -> None:
        now = time.monotonic()
        ttl = self.gateway_limits.result_ttl
        if now - self._last_prune > min(PRUNE_INTERVAL_S, max(ttl / 4, REAP_INTERVAL_S)):
            self._last_prune = now
            self.store.prune_completed(time.time() - ttl)
        if now - self._last_compact > COMPACT_INTERVAL_S:
            self._last_compact = now
            self.store.compact()
        check_alive = now - self._last_liveness > 1.0
        if check_alive:
            self._last_liveness = now
        for app in list(self.apps.values()):
            if check_alive:
                ready = [
                    r
                    for r in app.runners.values()
                    if r.state == RunnerState.READY and r.generation == app.generation
                ]
                for r in ready:
                    assert r.handle is not None
                    if not await asyncio.to_thread(self.provider.runner_alive, r.handle):
                        self._runner_lost(
                            app, r, RunnerState.FAILED, "runner process exited unexpectedly"
                        )
            idle = idle_to_stop(
                app.runners.values(), app.generation, len(app.pending), app.limits, now
            )
            for r in idle:
                self._spawn(self._drain_and_stop(app, r))
            self._expire_waiting(app)
            self._pump(app)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("scheduler task failed", exc_info=task.exception())

    # --- views --------------------------------------------------------------

    def runner_counts(self) -> list[tuple[str, str, int]]:
        out: list[tuple[str, str, int]] = []
        for app in self.apps.values():
            every = [*app.runners.values(), *app.retired]
            for state in RUNNER_STATES:
                out.append((app.name, state, sum(1 for r in every if r.state == state)))
        return out

    def all_runners(self) -> list[Runner]:
        out = [r for app in self.apps.values() for r in app.runners.values()]
        return out + list(self._orphans)


def _start_error_type(exc: BaseException) -> str:
    """The `error_type` of a provider's failure to prepare or start a runner."""
    if type(exc).__name__ == "EnvironmentBuildError":
        return "environment_build_failed"
    return "startup_failed"


def _request_id() -> str:
    return secrets.token_hex(16)


async def _read(response: RunnerResponse, timeout: float) -> bytes:
    """A response's whole body; a connection cut mid-body is the runner lost (retried)."""
    try:
        return await response.read(timeout + TIMEOUT_MARGIN_S)
    except (OSError, ValueError) as exc:
        raise RunnerConnectionError(str(exc)) from None


def _error_json(message: str, request_id: str) -> bytes:
    return json.dumps(
        {"detail": message, "error_type": "stream_broken", "request_id": request_id}
    ).encode()


def _error_detail(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body[:500].decode(errors="replace")
    if isinstance(data, dict):
        detail = data.get("detail", data.get("error"))
        if isinstance(detail, str):
            return detail
        if detail is not None:
            return json.dumps(detail)[:500]
    return ""
