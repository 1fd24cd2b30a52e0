"""What every provider offers: start, list and stop runners and gateways, and price them.

The gateway scales through a provider; `apply` places the gateway through one.
Implementations: `skyform.providers.local` (subprocesses on this host) and
`skyform.providers.skypilot` (one SkyPilot cluster per runner).
"""

from __future__ import annotations

import abc
import functools
from dataclasses import dataclass, field
from pathlib import Path

from skyform.errors import SkyformError


@dataclass(frozen=True)
class TLSMaterial:
    """PEM files for one TLS hop: what the server serves, and what its client trusts.

    `server_name` is the name the client checks in the certificate, when it is
    not the address it dials (runners: see `skyform.tlscontext.runner_server_name`).
    """

    cert: Path
    key: Path
    ca: Path | None = None
    server_name: str | None = None


@dataclass(frozen=True)
class RunnerSpec:
    """Everything needed to start one runner of one app revision."""

    stack: str
    app: str
    revision: str  # the bundle's revision (code, requirements, machine types, Python)
    bundle_path: Path
    machine_types: list[str]  # ordered candidates
    requirements: list[str]
    python_version: str  # "3.11": the bundle's minor version
    env: dict[str, str] = field(default_factory=dict)  # the app's plain env
    runner_id: str = ""
    # Never in a process environment or a file: local runners get them on a pipe,
    # cloud runners as task secrets (`credential_env`).
    secrets: dict[str, str] = field(default_factory=dict, repr=False)  # the app's secrets
    bundle_key: str = field(default="", repr=False)  # verifies the bundle
    runner_token: str = field(default="", repr=False)  # this runner's own token
    # The runner certificate of the stack; a provider whose runners are reached over a
    # network serves with it (an `https` handle url), a loopback one may leave it unused.
    tls: TLSMaterial | None = None

    def credential_env(self) -> dict[str, str]:
        """Env, secrets and keys as one mapping, for providers that hand them over as secrets."""
        keys = {"SKYFORM_BUNDLE_KEY": self.bundle_key, "SKYFORM_RUNNER_TOKEN": self.runner_token}
        return {**self.env, **self.secrets, **{k: v for k, v in keys.items() if v}}


@dataclass
class RunnerHandle:
    """A runner a provider started; `url` is where the gateway reaches it."""

    runner_id: str
    app: str
    revision: str
    url: str
    provider: str
    info: dict[str, object] = field(default_factory=dict)  # pid, cluster name, log path ...


@dataclass(frozen=True)
class GatewaySpec:
    stack: str
    port: int
    state_dir: Path
    env: dict[str, str] = field(default_factory=dict)  # plain variables
    # The stack's keys (SKYFORM_ADMIN_TOKEN ...): handed over on a pipe locally,
    # as task secrets on a cloud; never in a process environment or a file.
    credentials: dict[str, str] = field(default_factory=dict, repr=False)
    tls: TLSMaterial | None = None  # the gateway serves https with it
    runner_tls: TLSMaterial | None = None  # handed to runners; `ca` verifies them
    public_url: str = ""  # where callers reach it: the base of every URL it returns
    trusted_proxies: tuple[str, ...] = ()  # whose X-Forwarded-Proto/-Host it honours


@dataclass
class GatewayHandle:
    stack: str
    url: str
    provider: str
    info: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Price:
    """What one runner of a machine type costs where the provider would place it."""

    machine_type: str
    instance_type: str
    cloud: str
    region: str | None
    hourly_usd: float


class Provider(abc.ABC):
    """The whole contract between skyform and a place runners run.

    The abstract methods are what every provider must do. The others have
    defaults that fit a provider without the feature; a provider that has it
    overrides them. Callers use them all unconditionally: none asks a provider
    what it is, or probes for a method.
    """

    name: str

    # Runners and the gateway are processes of this host: reached on loopback,
    # running on this host's GPUs and in environments built here, and found
    # again by their command lines. False for a provider that places them on
    # other machines (whose traffic then always goes over TLS).
    runs_on_this_host: bool = False

    @abc.abstractmethod
    def start_runner(self, spec: RunnerSpec) -> RunnerHandle: ...

    @abc.abstractmethod
    def runner_alive(self, handle: RunnerHandle) -> bool: ...

    @abc.abstractmethod
    def stop_runner(self, handle: RunnerHandle, grace: float = 10.0) -> None: ...

    @abc.abstractmethod
    def list_runners(self, stack: str) -> list[RunnerHandle]: ...

    @abc.abstractmethod
    def start_gateway(self, spec: GatewaySpec) -> GatewayHandle: ...

    @abc.abstractmethod
    def gateway_alive(self, handle: GatewayHandle) -> bool: ...

    @abc.abstractmethod
    def stop_gateway(self, handle: GatewayHandle, grace: float = 10.0) -> None: ...

    def price(self, machine_type: str) -> Price | None:
        """What one runner of `machine_type` costs per hour here; None when unpriced.

        The plan shows costs only for machine types a provider prices.
        """
        return None

    def environment_key(self, requirements: list[str], python_version: str) -> str:
        """The key the environment of a runner with these requirements is built under.

        Shown in the plan, so that a change of what runners would install shows.
        The default is the recipe of `skyform.providers.environments` for this
        skyform install; a provider that ships skyform its own way (a wheel)
        says how its key differs.
        """
        return local_environment_key(tuple(requirements), python_version)

    def prepare_runner(self, spec: RunnerSpec) -> None:
        """Get what runners of `spec` need ready (an environment) before the first starts.

        Called once per new revision, off the request path, so that a build's
        time and failure show before a request waits on them. Default: nothing
        to prepare.
        """
        return None

    def runner_exit_code(self, handle: RunnerHandle) -> int | None:
        """The exit status of a runner that has exited; None while it runs or when unknown."""
        return None

    def should_stop_gateway(self, handle: GatewayHandle) -> bool:
        """Whether a recorded gateway is to be stopped through its handle.

        Default: always, since a gateway elsewhere that does not answer must be
        torn down all the more. A provider whose handles can go stale (a pid
        reused by another process) says no for those, and leaves them to
        `stop_orphans`.
        """
        return True

    def stop_orphans(self, stack: str, state_dir: Path) -> list[int]:
        """Stop gateways of `stack` started for `state_dir` that no handle records.

        A gateway whose start was interrupted after it was spawned, but before its
        handle reached the state, would otherwise hold its port forever. Returns
        what was stopped (pids); the default finds nothing to stop.
        """
        return []


@functools.lru_cache(maxsize=1024)
def local_environment_key(requirements: tuple[str, ...], python_version: str) -> str:
    """The key of an environment built on this host by `skyform.providers.environments`."""
    from skyform.providers.environments import environment_key, skyform_version

    return environment_key(list(requirements), python_version, skyform_version())


class CapacityUnavailable(SkyformError):
    """The provider has no room for this runner now (its GPUs are all in use).

    Not a failed start: the caller keeps the work queued and tries again
    later, and shows this message as why it waits.
    """
