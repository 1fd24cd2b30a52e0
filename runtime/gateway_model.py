"""The gateway's runtime model: requests, runners and apps, and the states they pass through.

Plain data with no behaviour beyond describing itself, so that the pure
policies (`scaling`, `retry`) and their tests can use the very objects the
scheduler works on, without a process or an event loop.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import re
import secrets
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from skyform.options import DEFAULTS, option_or_default
from skyform.providers.base import RunnerHandle
from skyform.runtime.gateway_client import RunnerClient, RunnerConnectionError, RunnerResponse
from skyform.runtime.queue_store import StoredRequest
from skyform.runtime.request_logs import LIVE_LOGS_PREFIX

RETIRED_KEPT = 20  # stopped and failed runners an app still lists
LIVE_LOGS_TIMEOUT_S = 2.0


class RunnerState(StrEnum):
    """Where a runner is in its life; the values are what `/-/apps` and metrics show."""

    BUILDING = "building"  # its environment is being built, its process started
    STARTING = "starting"  # up, running setup(); not ready yet
    READY = "ready"  # takes requests
    DRAINING = "draining"  # takes no new requests; finishing those in flight
    STOPPED = "stopped"
    FAILED = "failed"


# The states of a runner that serves, or will serve, its app.
ACTIVE = (RunnerState.BUILDING, RunnerState.STARTING, RunnerState.READY)


@dataclass(eq=False)
class LiveRequest(StoredRequest):
    """A request the gateway is working on (queued, running or just finished)."""

    persist: bool = True  # queue requests are stored; synchronous ones live in memory
    done: asyncio.Event = field(default_factory=asyncio.Event)
    last_answer: str = ""
    runner: Runner | None = None  # serving the current attempt
    # "http", or "websocket": the caller is lent a runner slot while its socket is open.
    kind: str = "http"
    # A synchronous caller still waiting; False once it gave up (nobody to stream to).
    waiting: bool = True
    # Handed over to the synchronous caller: a streamed response (`stream`) or,
    # for a websocket, the runner (`lent`). The caller sets `released` when done,
    # with `outcome` saying how it ended; only then is the runner's slot free again.
    stream: RunnerResponse | None = None
    lent: Runner | None = None
    released: asyncio.Event | None = None
    outcome: str = ""

    async def live_logs(self) -> list[dict[str, str]]:
        """Log lines so far: earlier attempts', then the running attempt's (asked of its runner)."""
        earlier = list(self.logs or [])
        runner = self.runner
        if self.status != "IN_PROGRESS" or runner is None or runner.client is None:
            return earlier
        try:
            status, _h, body = await runner.client.request(
                "GET", f"{LIVE_LOGS_PREFIX}{self.id}/logs", timeout=LIVE_LOGS_TIMEOUT_S
            )
            lines = json.loads(body).get("logs", []) if status == 200 else []
        except (RunnerConnectionError, TimeoutError, ValueError, AttributeError):
            lines = []
        return earlier + [line for line in lines if isinstance(line, dict)]


@dataclass(eq=False)
class Runner:
    id: str
    app: str
    revision: str
    generation: str
    state: RunnerState
    started: float
    handle: RunnerHandle | None = None
    client: RunnerClient | None = None
    in_flight: int = 0
    idle_since: float = 0.0
    error: str | None = None
    served: int = 0
    # X-Fal-Runner-Hint values this runner served, oldest first (bounded)
    hints: dict[str, None] = field(default_factory=dict)
    # Minted for this runner alone: it opens this runner and no other.
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)

    @property
    def url(self) -> str | None:
        return self.handle.url if self.handle else None

    @property
    def pid(self) -> int | None:
        pid = self.handle.info.get("pid") if self.handle else None
        return pid if isinstance(pid, int) else None

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "app": self.app,
            "state": self.state,
            "revision": self.revision,
            "generation": self.generation,
            "url": self.url,
            "pid": self.pid,
            "started": self.started,
            "in_flight": self.in_flight,
            "served": self.served,
            "error": self.error,
        }


@dataclass(frozen=True)
class AppLimits:
    """An app's scaling and timing options, read once from its bundle's options.

    The defaults (for a bundle that lacks an option) are the App options' own.
    """

    min_runners: int = int(DEFAULTS.min_runners)
    max_runners: int = int(DEFAULTS.max_runners)
    max_multiplexing: int = int(DEFAULTS.max_multiplexing)
    keep_alive: float = float(DEFAULTS.keep_alive)
    request_timeout: float = float(DEFAULTS.request_timeout)
    startup_timeout: float = float(DEFAULTS.startup_timeout)

    @classmethod
    def of(cls, meta: dict[str, Any]) -> AppLimits:
        options = meta.get("options") or {}
        values = {}
        for name, default in cls().__dict__.items():
            values[name] = type(default)(option_or_default(options, name))
        return cls(**values)


@dataclass(eq=False)
class AppState:
    name: str
    meta: dict[str, Any]
    auth: str
    env: dict[str, str]
    bundle_path: Path
    generation: str
    pending: deque[LiveRequest] = field(default_factory=deque)
    runners: dict[str, Runner] = field(default_factory=dict)
    retired: deque[Runner] = field(default_factory=lambda: deque(maxlen=RETIRED_KEPT))
    failures: int = 0
    next_start_at: float = 0.0
    last_error: str | None = None
    last_error_type: str | None = None
    waiting: str | None = None  # why a runner cannot start yet (no free GPU), if it cannot
    kick_handle: asyncio.TimerHandle | None = None
    limits: AppLimits = field(default_factory=AppLimits)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    queued_bytes: int = 0  # bodies of its accepted, unfinished queue requests

    def __post_init__(self) -> None:
        self.limits = AppLimits.of(self.meta)

    @property
    def revision(self) -> str:
        return self.meta["revision"]

    @property
    def fingerprint(self) -> str:
        return self.meta["fingerprint"]

    @property
    def options(self) -> dict[str, Any]:
        return self.meta.get("options", {})

    def endpoint_method(self, path: str) -> str | None:
        ep = self.endpoint_of(path)
        return str(ep.get("method", "POST")).upper() if ep is not None else None

    def endpoint_of(self, path: str) -> dict[str, Any] | None:
        """The bundle's record of the endpoint serving `path` (path parameters included)."""
        endpoints = self.meta.get("endpoints", [])
        for ep in endpoints:
            if ep.get("path") == path:
                return dict(ep)
        for ep in endpoints:
            pattern = _path_pattern(str(ep.get("path", "")))
            if pattern is not None and pattern.fullmatch(path):
                return dict(ep)
        return None

    def in_progress(self) -> int:
        return sum(r.in_flight for r in self.runners.values())

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "revision": self.revision,
            "fingerprint": self.fingerprint,
            "generation": self.generation,
            "auth": self.auth,
            "options": self.options,
            "endpoints": self.meta.get("endpoints", []),
            "queue_depth": len(self.pending),
            "in_progress": self.in_progress(),
            "runners": [r.describe() for r in [*self.runners.values(), *self.retired]],
            "last_error": self.last_error,
            "last_error_type": self.last_error_type,
            "waiting": self.waiting,
        }


def generation_of(revision: str, env: dict[str, str], secrets: dict[str, str] | None = None) -> str:
    """What decides whether runners must be replaced: the code revision, env and secrets."""
    raw = json.dumps({"revision": revision, "env": env, "secrets": secrets or {}}, sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


@functools.cache
def _path_pattern(template: str) -> re.Pattern[str] | None:
    """A regex for a path with `{param}` parts (`{param:path}` spans slashes); None without."""
    if "{" not in template:
        return None
    parts = re.split(r"\{([^}]+)\}", template)
    out = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            out.append(re.escape(part))
        else:
            out.append(".+" if part.endswith(":path") else "[^/]+")
    return re.compile("".join(out))
