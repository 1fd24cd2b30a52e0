"""A runner's life as the gateway sees it: connect, wait for health, drain, stop.

The mechanics only: how to reach a runner (verified TLS or plain TCP), when it
counts as ready (DESIGN §6: `/health` answers 200), how a failed start is
explained, how in-flight work is waited out. What to do about each outcome
(back off, fail queued requests, roll a revision) is the scheduler's, by the
scaling policy; the provider call that starts a runner stays with the
scheduler too, because handing the new runner over races its shutdown.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from pathlib import Path
from typing import Any

from skyform.errors import SkyformError
from skyform.logformat import LINE_RE
from skyform.providers.base import Provider, RunnerHandle, TLSMaterial
from skyform.runtime.gateway_client import RunnerClient, RunnerConnectionError, RunnerTLSError

from .gateway_model import Runner, RunnerState

HEALTH_POLL_S = 0.05
HEALTH_WAIT_S = 1.0
STOP_GRACE_S = 10.0
DRAIN_POLL_S = 0.02


class RunnerLifecycle:
    """Bring-up, health and drain of runners, for one gateway's provider and runner TLS."""

    def __init__(self, provider: Provider, runner_tls: TLSMaterial | None = None) -> None:
        self.provider = provider
        self.runner_tls = runner_tls
        self._runner_ssl = _runner_ssl_context(runner_tls)

    def connect(self, runner: Runner, handle: RunnerHandle) -> RunnerClient:
        """A client for the runner at `handle`, carrying its own token.

        Raises SkyformError when it serves https and this gateway cannot verify it.
        """
        host, port = _host_port(handle.url)
        tls = self._tls_for(handle.url)
        return RunnerClient(host, port, {"authorization": f"Bearer {runner.token}"}, **tls)

    def _tls_for(self, url: str) -> dict[str, Any]:
        """How to reach a runner at `url`: verified TLS for `https`, plain TCP otherwise."""
        if not url.startswith("https://"):
            return {}
        if self._runner_ssl is None or self.runner_tls is None:
            raise SkyformError("it serves https, but this gateway has no CA to verify it with")
        return {"ssl": self._runner_ssl, "server_hostname": self.runner_tls.server_name}

    async def wait_ready(self, runner: Runner, startup_timeout: float) -> str | None:
        """Poll a starting runner until it is ready; the reason it never will be, if not.

        Returns None once `/health` answers 200, or when the runner left the
        starting state meanwhile (stopped or removed: the caller checks).
        """
        assert runner.client is not None and runner.handle is not None
        handle = runner.handle
        deadline = time.monotonic() + startup_timeout + 10.0
        polls = 0
        while runner.state == RunnerState.STARTING:
            polls += 1
            if polls % 5 == 1 and not await asyncio.to_thread(self.provider.runner_alive, handle):
                return startup_failure(runner, handle, self.provider)
            try:
                # Held by the runner until setup() ends (or HEALTH_WAIT_S): readiness
                # is seen at once, with a request a second instead of twenty.
                status, _h, _b = await runner.client.request(
                    "GET", f"/health?wait={HEALTH_WAIT_S:g}", timeout=HEALTH_WAIT_S + 2.0
                )
                if status == 200:
                    break
            except RunnerTLSError as exc:  # waiting longer will not make it trusted
                return f"runner {runner.id}: {exc}"
            except (RunnerConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                return (
                    f"runner {runner.id} was not ready within startup_timeout "
                    f"({startup_timeout:g}s)"
                )
            await asyncio.sleep(HEALTH_POLL_S)
        return None

    async def wait_drained(self, runner: Runner, bound_s: float) -> None:
        """Wait until the runner has no request in flight, or `bound_s` has passed."""
        bound = time.monotonic() + bound_s
        while runner.in_flight > 0 and time.monotonic() < bound:
            await asyncio.sleep(DRAIN_POLL_S)

    async def stop(self, handle: RunnerHandle, grace: float = STOP_GRACE_S) -> None:
        """Stop the runner's process or machine (SIGTERM, then `grace` seconds to finish)."""
        await asyncio.to_thread(self.provider.stop_runner, handle, grace)


def startup_failure(runner: Runner, handle: RunnerHandle, provider: Provider) -> str:
    """Why a runner exited during start-up: its exit status and its log's last line."""
    exit_code = provider.runner_exit_code(handle)
    status = f" (exit status {exit_code})" if exit_code is not None else ""
    message = f"runner {runner.id} exited during start-up{status}"
    log_path = handle.info.get("log")
    if log_path:
        last = _last_log_line(Path(str(log_path)))
        if last:
            message += f": {last}"
    return message


def _last_log_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    if not lines:
        return ""
    stamped = LINE_RE.match(lines[-1])  # the message, without the runner's time and level
    return (stamped["message"] if stamped else lines[-1])[:500]


def _runner_ssl_context(material: TLSMaterial | None) -> ssl.SSLContext | None:
    """The context verifying runners against the stack CA (None without runner TLS)."""
    if material is None or material.ca is None:
        return None
    from skyform.tlscontext import client_context

    return client_context(material.ca)


def _host_port(url: str) -> tuple[str, int]:
    rest = url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port)
