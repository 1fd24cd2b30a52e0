"""Apply: carry out a plan step by step, recording each step in the state.

Why every step writes twice: before a provider call the resource is recorded
as `pending` (what is about to happen), after it the result replaces that
record. A process killed between the two leaves a pending record; the next
plan refreshes it against what is live and repairs it, so nothing a stack
started is ever unaccounted for. Large stacks batch app registrations so the
state is written once per batch, not once per app.

Order: a gateway being replaced or removed goes first (its runners die with
it), then the gateway is (re)started, then removed apps are unregistered, then
new and changed apps are registered, then apply waits until every app is
live (its `min_runners` ready on the new revision, no old runner taking
requests), records the apps that could not become live as tainted, and finally
the outputs are written.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skyform.engine.outputs import stack_outputs
from skyform.engine.plan import (
    APP_PREFIX,
    GATEWAY,
    GATEWAY_ATTRS,
    Action,
    Plan,
    ResourceChange,
    app_address,
)
from skyform.engine.stackfile import Stack
from skyform.errors import SkyformError
from skyform.options import option_or_default

if TYPE_CHECKING:
    from skyform.providers.base import Provider

BATCH = 25  # app registrations per state write
FAILED_RUNNERS_LIMIT = 2  # failed start-ups of a revision before apply gives up waiting
READY_MARGIN = 60.0  # seconds beyond an app's startup_timeout that apply waits for min_runners
# Apply long-polls the gateway (`GET /-/apps?wait=S`) for its runners' readiness: it
# hears of a ready runner at once, and asks about once per READY_WAIT_S meanwhile, which
# bounds how long a Ctrl-C waits. A gateway that cannot wait is asked every READY_POLL_S
# (each poll costs CPU that a runner importing torch on the same cores would use).
READY_WAIT_S = 1.0
READY_POLL_S = 0.25

Report = Callable[[str], None]


@dataclass
class StackContext:
    """Everything plan and apply need about one stack: its file, keys, state and provider."""

    stack: Stack
    workdir: Path  # where `.skyform/` lives
    keys: dict[str, str]
    backend: Any  # skyform.state.StateBackend
    provider: Provider
    runtime_dir: Path

    @property
    def gateway_state_dir(self) -> Path:
        return self.runtime_dir / "gateway"

    def gateway_ca_file(self) -> str | None:
        """This machine's CA file for the stack's gateway (None: the system's CAs)."""
        mode = self.stack.tls_mode
        if mode == "auto":
            from skyform.engine.tls import tls_dir

            return str(tls_dir(self.workdir, self.stack.name) / "ca.pem")
        files = self.stack.tls_files()
        return (files.ca or files.cert) if files is not None else None

    def gateway_credentials(self) -> dict[str, str]:
        """The keys the gateway starts with: on a pipe locally, never in its environment."""
        return {
            "SKYFORM_ADMIN_TOKEN": self.keys["admin_token"],
            "SKYFORM_RUNNER_TOKEN": self.keys["runner_token"],
            "SKYFORM_BUNDLE_KEY": self.keys["bundle_key"],
            "SKYFORM_API_KEY": self.keys["api_key"],
            **self._webhook_env(),
        }

    def _webhook_env(self) -> dict[str, str]:
        """The webhook signing key and `gateway.webhook_hosts`, for the gateway process."""
        from skyform.engine.keys import WEBHOOK_KEY_ENV, webhook_key

        env = {WEBHOOK_KEY_ENV: webhook_key(self.keys)}
        hosts = self.stack.model.gateway.webhook_hosts
        if hosts is not None:
            env["SKYFORM_WEBHOOK_HOSTS"] = ",".join(hosts)
        return env


def _limits_env(spec: dict[str, Any]) -> dict[str, str]:
    """The stack file's gateway limits, as the gateway process reads them."""
    limits = spec.get("limits")
    if not limits:
        return {}
    return {"SKYFORM_GATEWAY_LIMITS": json.dumps(limits, sort_keys=True)}


def runner_tls_wanted(stack: Stack) -> bool:
    """Whether runners serve TLS: always off-host, on `local` only with `runner_tls: true`."""
    from skyform.providers import provider_class

    config = stack.model.provider
    if not provider_class(config).runs_on_this_host:
        return True
    options = config.get("local") if isinstance(config, dict) else None
    return bool((options or {}).get("runner_tls"))


def gateway_tls(ctx: StackContext, known_urls: tuple[str, ...] = ()) -> dict[str, Any]:
    """The TLS part of the gateway's spec: its certificate, and the runners' material.

    Certificates are issued (or renewed) by the stack CA in `.skyform/tls/`;
    the gateway's names the hosts it is reached at: loopback, the configured
    host, the public URL's host and, when known, the address it ran at before
    (a SkyPilot head IP). A user-provided certificate is used as it is.
    """
    from urllib.parse import urlsplit

    from skyform.engine.tls import ensure_leaf
    from skyform.providers.base import TLSMaterial
    from skyform.tlscontext import gateway_server_name, runner_server_name

    stack = ctx.stack
    gw = stack.model.gateway
    out: dict[str, Any] = {"tls": None, "runner_tls": None}
    hosts = [gw.host]
    for url in (gw.public_url or "", *known_urls):
        host = urlsplit(url).hostname if url else None
        if host:
            hosts.append(host)
    mode = stack.tls_mode
    if mode == "auto":
        leaf = ensure_leaf(ctx.workdir, stack.name, "gateway", hosts)
        out["tls"] = TLSMaterial(leaf.cert, leaf.key, leaf.ca, gateway_server_name(stack.name))
    elif mode == "files":
        files = stack.tls_files()
        assert files is not None
        out["tls"] = TLSMaterial(
            Path(files.cert), Path(files.key), Path(files.ca) if files.ca else None
        )
    if runner_tls_wanted(stack):
        leaf = ensure_leaf(ctx.workdir, stack.name, "runner", [])
        out["runner_tls"] = TLSMaterial(
            leaf.cert, leaf.key, leaf.ca, runner_server_name(stack.name)
        )
    return out


def address_update(
    stack: Stack, handle: Any, certificate_before: bytes | None, certificate_now: bytes
) -> dict[str, str] | None:
    """What a remote gateway must be told once its address is known, or None.

    A gateway placed by a cloud provider starts before anyone knows its IP: its
    first certificate cannot name it, and without `public_url` it cannot know
    the base of the URLs it returns. Once `apply` has the address, the
    certificate is reissued to name it and both are pushed (`PUT /-/tls`); a
    renewed certificate is pushed the same way. A local gateway reads its files
    itself and knows its address: nothing to tell.
    """
    from skyform.providers import provider_class

    if handle is None or not handle.url or provider_class(handle.provider).runs_on_this_host:
        return None
    update: dict[str, str] = {}
    if certificate_before != certificate_now:
        update["cert"] = "new"
    if stack.model.gateway.public_url is None:
        update["public_url"] = handle.url
    return update or None


def push_gateway_identity(ctx: StackContext, handle: Any, before: bytes | None) -> None:
    """Reissue the gateway certificate for its (now known) address and hand it over."""
    from skyform.engine.admin_client import GatewayClient

    if ctx.stack.tls_mode != "auto" or handle is None or not handle.url:
        return
    gw_tls = gateway_tls(ctx, (handle.url,))["tls"]
    now = gw_tls.cert.read_bytes()
    update = address_update(ctx.stack, handle, before, now)
    if update is None:
        return
    token = ctx.keys["admin_token"]
    with GatewayClient.for_handle(handle, token, 60.0, ctx.gateway_ca_file()) as client:
        client.put_tls(
            now.decode(),
            gw_tls.key.read_text(),
            update.get("public_url") or None,
        )


def launch_gateway(
    ctx: StackContext, spec: dict[str, Any], known_urls: tuple[str, ...] = ()
) -> tuple[Any, bytes | None]:
    """Start the stack's gateway as `spec` (a plan's `gateway_spec`) describes it.

    Returns its handle and, with `tls: auto`, the certificate it was started
    with (so that a reissued one can be pushed to it once its address is known).
    """
    from skyform.providers.base import GatewaySpec

    tls = gateway_tls(ctx, known_urls)
    before = tls["tls"].cert.read_bytes() if ctx.stack.tls_mode == "auto" else None
    handle = ctx.provider.start_gateway(
        GatewaySpec(
            stack=ctx.stack.name,
            port=int(spec["port"]),
            state_dir=ctx.gateway_state_dir,
            env=_limits_env(spec),
            credentials=ctx.gateway_credentials(),
            public_url=str(spec.get("public_url") or ""),
            trusted_proxies=tuple(spec.get("trusted_proxies") or ()),
            **tls,
        )
    )
    return handle, before


class EarlyGateway:
    """A new stack's gateway, started while `apply --auto-approve` still plans.

    A gateway process takes a few tenths of a second to import and bind, and
    on a stack without one the plan is certain to start it: starting it in a
    thread as soon as the state is read (lock held) takes that time off the
    critical path of a first apply. Nothing else changes: the state records
    the gateway (pending first, then its handle) only when the apply reaches
    that step, which adopts this process if the plan wants the same gateway
    (`take`); otherwise, and whenever the apply ends before that step
    (`discard`: a bad app file, a stale lock, Ctrl-C), the process is stopped.
    A CLI killed outright leaves it to `stop_orphans`, like any gateway whose
    start was interrupted.

    Only for providers that run on this host: a cloud gateway costs money
    before the plan is known to want it.
    """

    def __init__(self, ctx: StackContext, spec: dict[str, Any]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.ctx = ctx
        self.spec = spec
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="skyform-early-gateway")
        self._future = self._pool.submit(self._launch)
        self._taken = False

    @classmethod
    def maybe_start(cls, ctx: StackContext, doc: Any) -> EarlyGateway | None:
        """Start the gateway now when the state has none and it runs on this host."""
        from skyform.engine.planner import desired_gateway

        if GATEWAY in doc.resources or not ctx.provider.runs_on_this_host:
            return None
        return cls(ctx, desired_gateway(ctx.stack))

    def _launch(self) -> tuple[Any, bytes | None]:
        stop_orphans(self.ctx)  # what an apply that starts a gateway does first
        return launch_gateway(self.ctx, self.spec)

    def take(self, spec: dict[str, Any]) -> tuple[Any, bytes | None] | None:
        """The started gateway's (handle, certificate) when `spec` is what it was started as.

        None when it is another spec or the start failed: the caller starts the
        gateway itself (and reports a failure with its own message).
        """
        if spec != self.spec:
            self.discard()
            return None
        try:
            result = self._future.result()
        except Exception:
            self.discard()
            return None
        self._taken = True
        self._pool.shutdown(wait=False)
        return result

    def discard(self) -> None:
        """Stop the early gateway unless `take` handed it over (waits for its start to end)."""
        if self._taken:
            return
        self._taken = True
        try:
            handle, _before = self._future.result()
        except Exception:
            return  # it did not start: nothing runs
        finally:
            self._pool.shutdown(wait=False)  # its one job has ended (or a Ctrl-C cut the wait)
        self.ctx.provider.stop_gateway(handle, grace=5.0)


def runtime_dir_for(workdir: Path, stack: str) -> Path:
    """`<stack dir>/.skyform/runtime/<stack>/`: gateway state, runner logs."""
    return Path(workdir) / ".skyform" / "runtime" / stack


def open_context(stack: Stack, workdir: Path | None = None, state: Any = None) -> StackContext:
    """Keys, state backend and provider of `stack` (nothing is started or locked).

    `workdir` and `state` override where `.skyform/` lives and the state
    backend (`run` keeps both in a temporary directory).
    """
    from skyform.engine.keys import stack_secrets
    from skyform.providers import create_provider
    from skyform.state import open_backend

    where = Path(workdir) if workdir is not None else stack.base_dir
    runtime = runtime_dir_for(where, stack.name)
    keys = stack_secrets(where, stack.name)
    backend = open_backend(
        state if state is not None else stack.model.state, stack=stack.name, workdir=where
    )
    provider = create_provider(stack.model.provider, stack=stack.name, runtime_dir=runtime)
    return StackContext(stack, where, keys, backend, provider, runtime)


def check_plan_current(plan: Plan, doc: Any, source: str) -> None:
    """Refuse a saved plan when the state moved on since it was made."""
    if plan.stack != doc.stack:
        raise SkyformError(f"{source} is a plan for stack {plan.stack!r}, not {doc.stack!r}")
    if plan.lineage is None:
        if doc.serial != 0:
            raise SkyformError(
                f"{source} is stale: it was made when stack {doc.stack!r} had no state, "
                f"and the state is now at serial {doc.serial}; run plan again"
            )
        return
    if doc.lineage != plan.lineage:
        raise SkyformError(
            f"{source} was made for state lineage {plan.lineage}, but the state has lineage "
            f"{doc.lineage}; it belongs to another state: run plan again"
        )
    if doc.serial != plan.serial:
        raise SkyformError(
            f"{source} is stale: it was made at state serial {plan.serial}, the state is now at "
            f"serial {doc.serial} (applied or changed since); run plan again"
        )


def secret_values(plan: Plan) -> dict[str, dict[str, str]]:
    """Each changing app's secrets, read from the environment now; a missing one is an error."""
    out: dict[str, dict[str, str]] = {}
    for change in plan.changes:
        if change.type != "app" or change.after is None:
            continue
        names = change.after.get("secrets") or []
        missing = [n for n in names if n not in os.environ]
        if missing:
            raise SkyformError(
                f"app {change.name}: secret {missing[0]} is not set in the environment "
                "(secrets are read from the environment at apply)"
            )
        out[change.name] = {n: os.environ[n] for n in names}
    return out


class _Interrupts:
    """First Ctrl-C: finish the step in flight, then stop. Second: stop at once."""

    def __init__(self, report: Report) -> None:
        self.requested = False
        self._report = report
        self._previous: Any = None

    def __enter__(self) -> _Interrupts:
        with contextlib.suppress(ValueError):  # not the main thread
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, _signum: int, _frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._report("Interrupt received: finishing the step in progress, then stopping.")

    def check(self) -> None:
        if self.requested:
            raise SkyformError(
                "apply interrupted; the state records what was done (run plan to see the rest)"
            )


class Applier:
    """Executes one plan against a locked state."""

    def __init__(
        self,
        ctx: StackContext,
        plan: Plan,
        doc: Any,
        report: Report,
        wait_ready: bool = True,
        progress: Any = None,
        early_gateway: EarlyGateway | None = None,
    ) -> None:
        self.ctx = ctx
        self.early_gateway = early_gateway
        self.plan = plan
        self.doc = doc
        self.report = report
        self.wait_ready = wait_ready
        self.progress = progress
        self.done: dict[str, int] = {"add": 0, "change": 0, "destroy": 0}
        self._interrupts: _Interrupts | None = None
        self._shown: set[str] = set()  # apps whose readiness progress has been shown

    def _progress_of(self, address: str) -> Callable[[str], None]:
        """Reports one environment build's lines, each prefixed with its app's address."""
        return lambda line: self.report(f"{address}: {line}")

    # -- state bookkeeping ---------------------------------------------------------

    def _write(self, updates: Mapping[str, dict[str, Any] | None], outputs: Any = None) -> None:
        resources = dict(self.doc.resources)
        for address, record in updates.items():
            if record is None:
                resources.pop(address, None)
            else:
                resources[address] = record
        self.doc = self.ctx.backend.write(self.doc.evolve(resources=resources, outputs=outputs))

    def _pending(self, address: str, operation: str, extra: dict[str, Any] | None = None) -> dict:
        record = dict(self.doc.resources.get(address) or {})
        record["pending"] = {"operation": operation, **(extra or {})}
        return record

    # -- the steps -----------------------------------------------------------------

    def run(self) -> Any:
        # A missing secret fails the apply before anything is stopped, started or written.
        secrets = secret_values(self.plan)
        with _Interrupts(self.report) as interrupts:
            self._interrupts = interrupts
            gw = self.plan.change(GATEWAY)
            if gw is not None and gw.action.deletes:
                self._stop_gateway(gw)
                interrupts.check()
            if gw is not None and gw.action.creates:
                self._start_gateway()
                interrupts.check()
            elif self.plan.mode != "destroy" and GATEWAY in self.doc.resources:
                self._renew_certificates()
            apps = [c for c in self.plan.changes if c.type == "app"]
            deletes = [c for c in apps if c.action is Action.DELETE]
            registers = [c for c in apps if c.action is not Action.DELETE]
            if deletes and self.plan.mode != "destroy":
                for batch in _batches(deletes):
                    self._delete_apps(batch)
                    interrupts.check()
            elif deletes:
                self._write({app_address(c.name): None for c in deletes})
                self.done["destroy"] += len(deletes)
            broken = self._build_environments(registers)
            interrupts.check()
            before = self._runner_ids() if registers else set()
            for batch in _batches(registers):
                self._register_apps(batch, secrets)
                interrupts.check()
            if self.plan.mode != "destroy" and self.wait_ready:
                names = [c.name for c in registers]
                broken.update(self._wait_live(names, before, skip=frozenset(broken)))
            if self.plan.mode != "destroy":
                self._taint(broken)
            self._write(self._settled(), outputs=self._outputs())
        if broken:
            raise SkyformError(
                "; ".join(f"app {name}: {message}" for name, message in sorted(broken.items()))
            )
        return self.doc

    def _settled(self) -> dict[str, dict[str, Any] | None]:
        """Records an interrupted apply left pending that turned out to be done.

        A process killed after the gateway took a change but before the state
        recorded it leaves a `pending` record whose change is live: refresh
        sees the live revision, the plan has nothing to do for it, and without
        this the marker (and the plan's "an interrupted change is reconciled"
        drift) would stay for good. Such a record becomes what is live.
        """
        settled: dict[str, dict[str, Any] | None] = {}
        for change in self.plan.resource_changes:  # `changes` leaves the no-ops out
            record = self.doc.resources.get(change.address)
            if change.action is not Action.NOOP or record is None or "pending" not in record:
                continue
            if change.type == "app" and change.before is not None:
                settled[change.address] = dict(change.before)
            elif change.type == "gateway" and record.get("handle"):
                # A live gateway (refresh found it by its handle): its stop never happened.
                settled[change.address] = {k: v for k, v in record.items() if k != "pending"}
        return settled

    def _build_environments(self, registers: list[ResourceChange]) -> dict[str, str]:
        """Build (or find cached) each changing app's environment before it is registered.

        Local runners start in these environments; building them here shows the
        installer's progress in `apply`/`run`, and an app whose requirements
        cannot be installed fails alone. It is still registered, so the gateway
        reports it (`skyform status`) and fails its requests with
        `environment_build_failed` instead of leaving them waiting.
        """
        if not self.ctx.provider.runs_on_this_host:
            return {}
        from skyform.bundle import read_bundle_meta
        from skyform.providers.environments import (
            EnvironmentBuildError,
            EnvUser,
            ensure_environment,
        )

        broken: dict[str, str] = {}
        for change in registers:
            data = self.plan.bundles.get(change.name)
            if data is None:
                continue
            meta = read_bundle_meta(data, self.ctx.keys["bundle_key"], check_python=False)
            started = time.monotonic()
            try:
                env = ensure_environment(
                    meta["requirements"],
                    meta["python"],
                    progress=self._progress_of(change.address),
                    used_by=EnvUser(self.ctx.stack.name, change.name, self.ctx.workdir),
                )
            except EnvironmentBuildError as exc:
                self.report(f"{change.address}: environment build failed")
                broken[change.name] = str(exc)
                continue
            if env.built:
                self.report(
                    f"{change.address}: environment {env.key[:12]} built "
                    f"[{time.monotonic() - started:.1f}s]"
                )
        return broken

    def _handle(self) -> Any:
        from skyform.providers.base import GatewayHandle

        record = self.doc.resources.get(GATEWAY) or {}
        handle = record.get("handle")
        return GatewayHandle(**handle) if handle else None

    def _client(self) -> Any:
        from skyform.engine.admin_client import GatewayClient

        handle = self._handle()
        if handle is None:
            raise SkyformError("the gateway is not running; run apply without a saved plan")
        return GatewayClient.for_handle(
            handle, self.ctx.keys["admin_token"], 120.0, self.ctx.gateway_ca_file()
        )

    def _stop_gateway(self, change: ResourceChange) -> None:
        self.report("gateway: stopping...")
        self._write({GATEWAY: self._pending(GATEWAY, "delete")})
        handle = self._handle()
        if handle is not None and should_stop(self.ctx.provider, handle):
            self.ctx.provider.stop_gateway(handle)
        stop_orphans(self.ctx)
        self._write({GATEWAY: None})
        self.done["destroy"] += 1
        self.report("gateway: stopped")

    def _start_gateway(self) -> None:
        spec = self.plan.gateway_spec
        self.report(f"gateway: starting on port {spec['port']}...")
        attrs = {k: spec.get(k) for k in GATEWAY_ATTRS if k != "limits" or k in spec}
        prior = self.doc.resources.get(GATEWAY) or {}
        known = (str(prior["url"]),) if prior.get("url") else ()  # e.g. a SkyPilot head IP
        self._write({GATEWAY: {**attrs, "pending": {"operation": "create"}}})
        started = time.monotonic()
        early = self.early_gateway.take(spec) if self.early_gateway is not None else None
        if early is not None:
            handle, before = early  # started while the plan was being made; it is this one
        else:
            stop_orphans(self.ctx)  # a gateway whose start was interrupted holds the port
            handle, before = launch_gateway(self.ctx, spec, known)
        handle_dict = {
            "stack": handle.stack,
            "url": handle.url,
            "provider": handle.provider,
            "info": dict(handle.info),
        }
        self._write({GATEWAY: {**attrs, "url": handle.url, "handle": handle_dict}})
        push_gateway_identity(self.ctx, handle, before)
        self.done["add"] += 1
        self.report(f"gateway: ready at {handle.url} [{time.monotonic() - started:.1f}s]")

    def _renew_certificates(self) -> None:
        """Reissue certificates close to expiry; a local gateway reloads them by itself."""
        from skyform.engine.tls import tls_dir

        record = self.doc.resources.get(GATEWAY) or {}
        if self.ctx.stack.tls_mode == "auto" or runner_tls_wanted(self.ctx.stack):
            cert = tls_dir(self.ctx.workdir, self.ctx.stack.name) / "gateway.pem"
            before = cert.read_bytes() if cert.exists() else None
            gateway_tls(self.ctx, (str(record["url"]),) if record.get("url") else ())
            push_gateway_identity(self.ctx, self._handle(), before)

    def _delete_apps(self, batch: list[ResourceChange]) -> None:
        self._write({c.address: self._pending(c.address, "delete") for c in batch})
        with self._client() as client:
            for c in batch:
                self.report(f"{c.address}: removing...")
                client.delete_app(c.name)
        self._write({c.address: None for c in batch})
        self.done["destroy"] += len(batch)

    def _register_apps(
        self, batch: list[ResourceChange], secrets: dict[str, dict[str, str]]
    ) -> None:
        from skyform.bundle import read_bundle_meta

        self._write(
            {
                c.address: self._pending(
                    c.address, "+".join(c.actions), {"revision": (c.after or {}).get("revision")}
                )
                for c in batch
            }
        )
        results: dict[str, dict[str, Any] | None] = {}
        with self._client() as client:
            for c in batch:
                after = dict(c.after or {})
                data = self.plan.bundles.get(c.name)
                if data is None:
                    raise SkyformError(f"{c.address}: the plan carries no bundle for it")
                read_bundle_meta(
                    data, self.ctx.keys["bundle_key"], check_python=False
                )  # refuse a foreign bundle early
                verb = {Action.CREATE: "creating", Action.UPDATE: "updating"}.get(
                    c.action, "rolling out a new revision"
                )
                self.report(f"{c.address}: {verb}...")
                # Forced (--replace) or tainted: the same revision, on fresh runners.
                replace = c.reason == "--replace" or c.tainted is not None
                answer = client.put_app(
                    c.name,
                    data,
                    after.get("auth") or "private",
                    dict(after.get("env", {})),
                    secrets.get(c.name, {}),
                    replace=replace,
                )
                after["revision"] = answer.get("revision", after.get("revision"))
                after["fingerprint"] = answer.get("fingerprint", after.get("fingerprint"))
                results[c.address] = after
                self.done["add"] += c.action.creates
                self.done["destroy"] += c.action.deletes
                self.done["change"] += c.action is Action.UPDATE
        self._write(results)

    def _runner_ids(self) -> set[str]:
        """Ids of every runner the gateway knows now (failed and stopped ones included)."""
        if self._handle() is None:
            return set()
        with self._client() as client:
            return {
                str(r.get("id"))
                for app in client.list_apps().values()
                for r in app.get("runners", [])
            }

    def _wait_live(
        self, registered: list[str], seen: set[str], skip: frozenset[str] = frozenset()
    ) -> dict[str, str]:
        """Wait until every app serves only its current revision; returns the apps that cannot.

        "Apply means live" (DESIGN §7): an app is live when it has `min_runners`
        ready runners of its current generation and no runner of an older one
        takes requests any more (the gateway drains old runners once a new one
        is ready). Apps with no runner to replace and `min_runners: 0` are live
        at once. `seen`: the runners that existed before this apply registered
        anything, so a failure is blamed on a runner that just failed, never an
        older one.
        """
        watched = {
            name: rec
            for name, rec in self._app_records().items()
            if name not in skip
            and (name in registered or int(option_or_default(rec, "min_runners")) > 0)
        }
        if not watched:
            return {}
        with self._client() as client:
            live, seen = client.watch_apps(None, 0.0)
            deadline = (
                time.monotonic()
                + max(float(option_or_default(r, "startup_timeout")) for r in watched.values())
                + READY_MARGIN
            )
            failed: dict[str, str] = {}
            while True:
                for name, rec in list(watched.items()):
                    verdict = self._liveness(name, rec, live.get(name), seen)
                    if verdict is None:
                        del watched[name]
                    elif verdict:
                        failed[name] = verdict
                        del watched[name]
                if not watched:
                    return failed
                if time.monotonic() > deadline:
                    for name in watched:
                        app = live.get(name) or {}
                        error = app.get("last_error") or "no error reported"
                        failed[name] = (
                            f"its new revision was not live in time ({error}); "
                            f"see `skyform logs {name}`"
                        )
                    return failed
                if seen is None:  # a gateway that answers at once: pace the questions
                    time.sleep(READY_POLL_S)
                if self._interrupts is not None:
                    self._interrupts.check()  # Ctrl-C while waiting: stop now, the state is whole
                wait = min(READY_WAIT_S, max(deadline - time.monotonic(), 0.0))
                live, seen = client.watch_apps(seen, wait)

    def _liveness(
        self, name: str, rec: dict[str, Any], app: dict[str, Any] | None, seen: set[str]
    ) -> str | None:
        """None: `name` is live. "": not yet. Otherwise why it cannot become live."""
        if app is None:
            return "it is not registered at the gateway any more"
        generation = app.get("generation")
        runners = app.get("runners", [])
        current = [r for r in runners if r.get("generation", generation) == generation]
        old = [
            r
            for r in runners
            if r.get("generation", generation) != generation
            and r.get("state") in ("building", "starting", "ready")
        ]
        ready = [r for r in current if r.get("state") == "ready"]
        wanted = int(option_or_default(rec, "min_runners"))
        # An app shown waiting for its old runners' replacement is shown until it is done.
        replacing = bool(old) or name in self._shown
        if self.progress is not None and (wanted or replacing):
            self._shown.add(name)
            states = Counter(str(r.get("state")) for r in current if r.get("state") != "ready")
            states = Counter({s: n for s, n in states.items() if s not in ("failed", "stopped")})
            if old:
                states["of the old revision still serving"] = len(old)
            self.progress(name, len(ready), max(wanted, 1 if replacing else 0), dict(states))
        if len(ready) >= wanted and not old:
            return None
        if app.get("last_error_type") == "environment_build_failed":
            return f"its environment cannot be built: {app.get('last_error')}"
        fresh_failures = sorted(
            (r for r in current if r.get("state") == "failed" and str(r.get("id")) not in seen),
            key=lambda r: float(r.get("started") or 0),
        )
        if len(fresh_failures) >= FAILED_RUNNERS_LIMIT and not ready:
            newest = fresh_failures[-1]
            error = newest.get("error") or f"runner {newest.get('id')} failed to start"
            serving = "; the old revision keeps serving" if old else ""
            return f"its runners fail to start: {error}{serving} (see `skyform logs {name}`)"
        return ""

    def _app_records(self) -> dict[str, dict[str, Any]]:
        return {
            a[len(APP_PREFIX) :]: rec
            for a, rec in self.doc.resources.items()
            if a.startswith(APP_PREFIX)
        }

    def _taint(self, failed: dict[str, str]) -> None:
        """Record each app that did not become live as tainted: the next plan replaces it."""
        updates: dict[str, dict[str, Any] | None] = {}
        for name, reason in failed.items():
            record = self.doc.resources.get(app_address(name))
            if record is not None:
                updates[app_address(name)] = {**record, "tainted": {"reason": reason}}
        if updates:
            self._write(updates)

    def _outputs(self) -> dict[str, Any]:
        if self.plan.mode == "destroy" or GATEWAY not in self.doc.resources:
            return {}
        record = self.doc.resources[GATEWAY]
        base = (
            record.get("public_url")
            or record.get("url")
            or self.plan.outputs.get("gateway_url", "")
        )
        names = [a[len(APP_PREFIX) :] for a in self.doc.resources if a.startswith(APP_PREFIX)]
        if record.get("tls", "off") == "off":
            return stack_outputs(base, names)
        return stack_outputs(base, names, tls=True, ca_file=self._ca_file())

    def _ca_file(self) -> str | None:
        """The CA a client trusts the gateway through: the stack CA, or the user's `ca`."""
        files = self.ctx.stack.tls_files()
        if files is not None and not files.ca:
            return None  # a user's certificate alone: a public CA vouches for it
        found = self.ctx.gateway_ca_file()
        return str(Path(found).resolve()) if found else None


QUEUE_FILES = ("gateway.sqlite3", "gateway.sqlite3-wal", "gateway.sqlite3-shm")


def remove_queue(ctx: StackContext) -> list[Path]:
    """Delete the stopped gateway's queue database (requests, results, apps' env): what
    `destroy` leaves behind only when asked to (`--keep-queue`)."""
    removed = []
    for name in QUEUE_FILES:
        path = ctx.gateway_state_dir / name
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def should_stop(provider: Provider, handle: Any) -> bool:
    """Whether to stop a recorded gateway through its handle (see `Provider.should_stop_gateway`)."""
    return provider.should_stop_gateway(handle)


def stop_orphans(ctx: StackContext) -> list[int]:
    """Stop any gateway of this stack's runtime dir that the state does not know.

    A gateway whose start was interrupted after it was spawned, but before its
    handle reached the state, would otherwise hold the port forever.
    """
    return ctx.provider.stop_orphans(ctx.stack.name, ctx.gateway_state_dir)


def _runner_error(app: dict[str, Any]) -> str | None:
    for runner in app.get("runners", []):
        if runner.get("error"):
            return str(runner["error"])
    return None


def _batches(items: list[ResourceChange]) -> Iterator[list[ResourceChange]]:
    for i in range(0, len(items), BATCH):
        yield items[i : i + BATCH]
