"""The `skypilot` provider: one SkyPilot cluster per runner, one CPU cluster for the gateway.

`sky` is imported only inside functions of this module: a stack on the local
provider never pays SkyPilot's import time, and skyform works without the
`skyform[skypilot]` extra installed.

Placement and prices live in `skyform.providers.skypilot_placement` (re-exported
here), task files in `skyform.providers.skypilot_tasks`.

Spend. Every cluster carries autostop (idle minutes, then down): a cluster whose
runner or gateway process ended is torn down by SkyPilot itself. A launch is
bounded (`provision_timeout_minutes`): one stuck provisioning is cancelled and
its cluster downed; a failed launch is downed at once. Clusters are found by
name, so stopping a gateway (destroy) also downs its stack's runners, and
starting one downs runners a lost gateway left behind.

The gateway on SkyPilot scales runners through SkyPilot too: it runs this same
provider, which talks to the SkyPilot API server named by
`SKYPILOT_API_SERVER_ENDPOINT` in its environment (the deploying side's
endpoint, or the stack's `api_server` key), authenticated by
`SKYPILOT_SERVICE_ACCOUNT_TOKEN` when the deploying side has one. A server only
the deploying machine can reach (the default local one) is refused for the
gateway with a clear error.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import json
import os
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import skyform.providers.skypilot_tasks as tasks
from skyform.errors import SkyformError
from skyform.providers.base import (
    GatewayHandle,
    GatewaySpec,
    Price,
    Provider,
    RunnerHandle,
    RunnerSpec,
)
from skyform.providers.skypilot_placement import (
    Quote,
    candidates_ordered,
    clean_message,
    price,
    quote,
    resource_config,
    resources_for,
    set_resources,
)
from skyform.suggest import did_you_mean

__all__ = [  # the placement functions are part of this module's public face
    "ClusterRecord",
    "ProvisioningError",
    "Quote",
    "SDKClient",
    "SkyClient",
    "SkyPilotProvider",
    "candidates_ordered",
    "price",
    "provisioning_error",
    "quote",
    "resource_config",
    "resources_for",
]

NAME = "skypilot"
OPTION_NAMES = (
    "clouds",
    "regions",
    "use_spot",
    "autostop_minutes",
    "provision_timeout_minutes",
    "api_server",
)
API_SERVER_ENV = "SKYPILOT_API_SERVER_ENDPOINT"
SERVICE_ACCOUNT_TOKEN_ENV = "SKYPILOT_SERVICE_ACCOUNT_TOKEN"
REMOTE_GATEWAY_STATE_DIR = "~/.skyform/gateway"


class ProvisioningError(SkyformError):
    """SkyPilot could not bring a runner or gateway up; `reason` is SkyPilot's own.

    `kind` is one of "capacity", "quota", "cloud_not_enabled", "no_match",
    "cloud_error", "timeout", "api_server" or "other". `leftover` names a cluster that may
    still exist (teardown after the failure also failed), else None.
    """

    def __init__(self, app: str, kind: str, reason: str, leftover: str | None = None) -> None:
        self.app = app
        self.kind = kind
        self.reason = reason
        self.leftover = leftover
        tail = f" (cluster {leftover} may still exist: sky down {leftover})" if leftover else ""
        super().__init__(f"{app}: {kind.replace('_', ' ')}: {reason}{tail}")


def provisioning_error(
    app: str, exc: BaseException, leftover: str | None = None
) -> ProvisioningError:
    """Map a SkyPilot exception to a ProvisioningError carrying SkyPilot's reason.

    The failover history (one entry per region or cloud tried) is what says why
    each candidate failed; its distinct messages are kept, newest last.
    """
    if isinstance(exc, ProvisioningError):
        return exc
    messages = [clean_message(str(exc))]
    for attempt in getattr(exc, "failover_history", None) or []:
        text = clean_message(f"{type(attempt).__name__}: {attempt}")
        if text not in messages:
            messages.append(text)
    reason = "; ".join(m for m in messages if m) or type(exc).__name__
    return ProvisioningError(app, _classify(exc, reason), reason, leftover)


def _classify(exc: BaseException, reason: str) -> str:
    name = type(exc).__name__
    lowered = reason.lower()
    if name == "NoCloudAccessError" or "not enabled" in lowered:
        return "cloud_not_enabled"
    if "quota" in lowered or "limitexceeded" in lowered.replace(" ", ""):
        return "quota"
    if "catalog does not contain" in lowered or "no launchable resource" in lowered:
        return "no_match"
    if "capacity" in lowered or "insufficient" in lowered or name == "ResourcesUnavailableError":
        return "capacity"
    if name == "CloudError":
        return "cloud_error"  # the cloud's API refused the call or could not be reached
    return "other"


# --- options ---------------------------------------------------------------------


def _string_list(key: str, value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value):
        return list(value)
    raise SkyformError(f"provider.skypilot.{key} must be a list of names, got {value!r}")


def _positive_int(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SkyformError(f"provider.skypilot.{key} must be a whole number >= 1, got {value!r}")
    return value


# --- talking to SkyPilot ------------------------------------------------------------


@dataclass(frozen=True)
class ClusterRecord:
    """What SkyPilot says about one cluster."""

    name: str
    status: str  # "INIT", "UP", "STOPPED"
    head_ip: str | None = None
    resources: str = ""


class SkyClient(Protocol):
    """The calls the provider makes to SkyPilot; `SDKClient` makes them for real."""

    def launch(self, task: Any, cluster_name: str, *, dryrun: bool, timeout: float) -> int | None:
        """Provision (or, with dryrun, only plan) and submit the task; returns its job id."""
        ...

    def status(self, cluster_names: list[str] | None = None) -> list[ClusterRecord]: ...

    def endpoint(self, cluster_name: str, port: int) -> str: ...

    def job_running(self, cluster_name: str, job_id: int | None) -> bool: ...

    def down(self, cluster_name: str) -> None: ...

    def api_server(self) -> tuple[str, bool]:
        """(endpoint, is it only reachable from this machine)."""
        ...


class SDKClient:
    """The SkyPilot SDK through its API server (started locally by SkyPilot if none)."""

    def launch(self, task: Any, cluster_name: str, *, dryrun: bool, timeout: float) -> int | None:
        import sky

        request_id = sky.launch(task, cluster_name=cluster_name, dryrun=dryrun)
        result = _wait(request_id, timeout)
        job_id = result[0] if isinstance(result, (tuple, list)) and result else None
        return job_id

    def status(self, cluster_names: list[str] | None = None) -> list[ClusterRecord]:
        import sky

        records = sky.get(sky.status(cluster_names=cluster_names))
        out = []
        for record in records:
            get = (
                record.get if isinstance(record, dict) else lambda k, r=record: getattr(r, k, None)
            )
            handle = get("handle")
            status = get("status")
            out.append(
                ClusterRecord(
                    name=str(get("name")),
                    status=getattr(status, "value", str(status)),
                    head_ip=getattr(handle, "head_ip", None),
                    resources=str(get("resources_str") or ""),
                )
            )
        return out

    def endpoint(self, cluster_name: str, port: int) -> str:
        import sky

        # Keyed by port number; some SkyPilot versions key it by the port as a string.
        endpoints: dict[Any, str] = sky.get(sky.endpoints(cluster_name, port))
        url = str(endpoints.get(port) or endpoints.get(str(port)) or "")
        if not url:
            raise SkyformError(f"SkyPilot has no endpoint for port {port} of {cluster_name}")
        return url if "://" in url else f"http://{url}"

    def job_running(self, cluster_name: str, job_id: int | None) -> bool:
        import sky

        statuses = sky.get(sky.job_status(cluster_name, [job_id] if job_id is not None else None))
        status = next(iter(statuses.values()), None) if statuses else None
        return status is not None and not status.is_terminal()

    def down(self, cluster_name: str) -> None:
        import sky
        from sky import exceptions

        with contextlib.suppress(exceptions.ClusterDoesNotExist):
            sky.get(sky.down(cluster_name))

    def api_server(self) -> tuple[str, bool]:
        from sky.server import common

        endpoint = common.get_server_url()
        return endpoint, bool(common.is_api_server_local(endpoint))


def _wait(request_id: Any, timeout: float) -> Any:
    """`sky.get` bounded by `timeout`: a stuck request is cancelled, never left running."""
    import sky

    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = sky.get(request_id)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        with contextlib.suppress(Exception):
            sky.get(sky.api_cancel(request_id, silent=True))
        raise TimeoutError(f"SkyPilot request {request_id} did not finish in {timeout:.0f}s")
    if "error" in box:
        raise box["error"]
    return box.get("value")


# --- the provider --------------------------------------------------------------------


class SkyPilotProvider(Provider):
    """Runners and gateways as SkyPilot clusters. See the module docstring.

    `client` is how SkyPilot is reached (the SDK by default); `dryrun` plans each
    launch through SkyPilot (optimizer, validation) without provisioning.
    """

    def __init__(
        self,
        stack: str,
        runtime_dir: Path,
        clouds: list[str] | None = None,
        regions: list[str] | None = None,
        use_spot: bool = False,
        autostop_minutes: int = 30,
        provision_timeout_minutes: int = 20,
        api_server: str | None = None,
        *,
        client: SkyClient | None = None,
        dryrun: bool = False,
        **unknown: object,
    ) -> None:
        if unknown:
            key = next(iter(unknown))
            raise SkyformError(
                f'provider.skypilot: unknown key "{key}"{did_you_mean(key, OPTION_NAMES)}; '
                f"known: {', '.join(OPTION_NAMES)}"
            )
        if importlib.util.find_spec("sky") is None:  # looks, without importing it
            raise SkyformError(
                "the skypilot provider needs SkyPilot: pip install 'skyform[skypilot]'"
            )
        if not isinstance(use_spot, bool):
            raise SkyformError(
                f"provider.skypilot.use_spot must be true or false, got {use_spot!r}"
            )
        if api_server is not None and not (
            isinstance(api_server, str) and api_server.startswith(("http://", "https://"))
        ):
            raise SkyformError(
                f"provider.skypilot.api_server must be an http(s) URL, got {api_server!r}"
            )
        self.stack = stack
        self.runtime_dir = Path(runtime_dir)
        self.clouds = _string_list("clouds", clouds)
        self.regions = _string_list("regions", regions)
        self.use_spot = use_spot
        # Autostop is never off: it is what ends a cluster nobody stops.
        self.autostop_minutes = _positive_int("autostop_minutes", autostop_minutes)
        self.provision_timeout_minutes = _positive_int(
            "provision_timeout_minutes", provision_timeout_minutes
        )
        self.api_server = api_server
        self.client = client if client is not None else SDKClient()
        self.dryrun = dryrun
        self.name = NAME

    # -- config -----------------------------------------------------------------------

    def options(self) -> dict[str, Any]:
        """The stack keys, as `provider.json` carries them to the gateway."""
        return {
            "clouds": self.clouds,
            "regions": self.regions,
            "use_spot": self.use_spot,
            "autostop_minutes": self.autostop_minutes,
            "provision_timeout_minutes": self.provision_timeout_minutes,
            **({"api_server": self.api_server} if self.api_server else {}),
        }

    # -- prices -----------------------------------------------------------------------

    def quote(self, machine_types: Sequence[str]) -> Quote:
        return quote(machine_types, self.clouds, self.regions, self.use_spot)

    def price(self, machine_type: str) -> Price | None:
        return self.quote([machine_type]).price

    # -- tasks ------------------------------------------------------------------------

    def _work_dir(self, *parts: str) -> Path:
        path = self.runtime_dir.joinpath("skypilot", *parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _task(
        self,
        config: dict[str, Any],
        machine_types: Sequence[str],
        ports: Sequence[int],
        labels: Mapping[str, str],
        secrets: Mapping[str, str],
        cluster: str,
    ) -> Any:
        """A `sky.Task` from `config`, with resources and secrets; the task file on disk
        (for audit and `sky launch` by hand) holds everything except the secrets."""
        import sky

        task = sky.Task.from_yaml_config(copy.deepcopy(config))
        resources = resources_for(
            machine_types,
            self.clouds,
            self.regions,
            self.use_spot,
            ports=ports,
            autostop_minutes=self.autostop_minutes,
            labels=labels,
        )
        set_resources(task, machine_types, resources)
        _write_task_file(self._work_dir("tasks") / f"{cluster}.yaml", task)
        if secrets:
            task.update_secrets(dict(secrets))
        return task

    def environment_key(self, requirements: list[str], python_version: str) -> str:
        """The key a runner's environment gets on its cluster (shown in the plan)."""
        package = tasks.skyform_package(self._work_dir("wheels"))
        return tasks.remote_environment_key(requirements, python_version, package)

    def runner_task(self, spec: RunnerSpec, cluster: str) -> Any:
        if spec.tls is None:
            # Runners are reached over the network: their traffic is never plaintext.
            raise SkyformError(
                "a SkyPilot runner needs the stack's runner certificate (the gateway "
                "was started without --runner-cert/--runner-key/--runner-ca)"
            )
        config = tasks.runner_task_config(
            name=cluster,
            bundle_path=spec.bundle_path,
            revision=spec.revision,
            requirements=list(spec.requirements),
            python_version=spec.python_version,
            package=tasks.skyform_package(self._work_dir("wheels")),
            tls=(spec.tls.cert, spec.tls.key),
        )
        labels = tasks.cluster_labels(spec.stack, spec.app, spec.revision)
        return self._task(
            config, spec.machine_types, [tasks.RUNNER_PORT], labels, spec.credential_env(), cluster
        )

    def gateway_task(self, spec: GatewaySpec, cluster: str, endpoint: str) -> Any:
        from importlib.metadata import version

        provider_json = self._work_dir("gateway") / "provider.json"
        provider_json.write_text(json.dumps({NAME: self.options()}, indent=2) + "\n")
        config = tasks.gateway_task_config(
            name=cluster,
            stack=spec.stack,
            port=spec.port,
            remote_state_dir=REMOTE_GATEWAY_STATE_DIR,
            provider_json=provider_json,
            python_version=tasks.local_python(),
            package=tasks.skyform_package(self._work_dir("wheels"), extras=("skypilot",)),
            requirements=[f"skypilot=={version('skypilot')}"],
            tls_files=_gateway_tls_files(spec),
            extra_args=_gateway_url_args(spec),
        )
        secrets = {**spec.env, **spec.credentials, API_SERVER_ENV: endpoint}
        token = os.environ.get(SERVICE_ACCOUNT_TOKEN_ENV)
        if token:
            secrets[SERVICE_ACCOUNT_TOKEN_ENV] = token
        labels = tasks.cluster_labels(spec.stack, "gateway", "gateway")
        return self._task(config, ["CPU"], [spec.port], labels, secrets, cluster)

    # -- launch and teardown ----------------------------------------------------------

    def _launch(self, app: str, task: Any, cluster: str) -> int | None:
        """Launch, or fail with SkyPilot's reason after making sure nothing is left."""
        try:
            return self.client.launch(
                task,
                cluster,
                dryrun=self.dryrun,
                timeout=self.provision_timeout_minutes * 60.0,
            )
        except Exception as exc:
            leftover = None if self.dryrun else self._cleanup(cluster)
            if isinstance(exc, TimeoutError):
                raise ProvisioningError(app, "timeout", clean_message(str(exc)), leftover) from None
            raise provisioning_error(app, exc, leftover) from None

    def _down(self, cluster: str) -> None:
        """Tear a cluster down and forget its rendered task file."""
        self.client.down(cluster)
        (self.runtime_dir / "skypilot" / "tasks" / f"{cluster}.yaml").unlink(missing_ok=True)

    def _cleanup(self, cluster: str) -> str | None:
        """Down whatever a failed launch left; the cluster's name if that also fails."""
        try:
            if self.client.status([cluster]):
                self._down(cluster)
            return None
        except Exception:
            return cluster

    def start_runner(self, spec: RunnerSpec) -> RunnerHandle:
        runner_id = spec.runner_id or tasks.new_runner_id()
        cluster = tasks.runner_cluster_name(spec.stack, spec.app, spec.revision, runner_id)
        try:
            task = self.runner_task(spec, cluster)
        except SkyformError as exc:
            raise ProvisioningError(spec.app, "other", str(exc)) from None
        job_id = self._launch(spec.app, task, cluster)
        url = "" if self.dryrun else _https(self.client.endpoint(cluster, tasks.RUNNER_PORT))
        return RunnerHandle(
            runner_id=runner_id,
            app=spec.app,
            revision=spec.revision,
            url=url,
            provider=NAME,
            info={"cluster": cluster, "job_id": job_id, "dryrun": self.dryrun},
        )

    def _running(self, info: Mapping[str, object]) -> bool:
        """The cluster is UP and its job (the runner or gateway process) has not ended."""
        cluster = str(info.get("cluster", ""))
        records = self.client.status([cluster])
        if not records or records[0].status != "UP":
            return False
        job_id = info.get("job_id")
        return self.client.job_running(cluster, job_id if isinstance(job_id, int) else None)

    def runner_alive(self, handle: RunnerHandle) -> bool:
        return self._running(handle.info)

    def stop_runner(self, handle: RunnerHandle, grace: float = 10.0) -> None:
        # `sky down` stops the job (SIGTERM to the runner) and releases the machine.
        self._down(str(handle.info.get("cluster", "")))

    def list_runners(self, stack: str) -> list[RunnerHandle]:
        """Every runner cluster of `stack` SkyPilot knows, provisioning ones included
        (so a gateway never counts fewer runners than exist and overshoots max_runners)."""
        prefix = tasks.stack_prefix(stack)
        found = []
        for record in self.client.status(None):
            parsed = tasks.parse_cluster_name(record.name)
            if not record.name.startswith(prefix) or parsed is None or parsed.kind != "runner":
                continue
            url = f"https://{record.head_ip}:{tasks.RUNNER_PORT}" if record.head_ip else ""
            found.append(
                RunnerHandle(
                    runner_id=parsed.runner_id,
                    app=parsed.app,
                    revision=parsed.revision,
                    url=url,
                    provider=NAME,
                    info={"cluster": record.name, "status": record.status},
                )
            )
        return found

    def gateway_endpoint(self) -> str:
        """The API server the remote gateway will call; refused when it cannot reach it."""
        endpoint = self.api_server
        if endpoint is None:
            endpoint, local = self.client.api_server()
            if local:
                raise ProvisioningError(
                    "gateway",
                    "api_server",
                    f"the SkyPilot API server at {endpoint} runs on this machine, so the "
                    "gateway cluster cannot reach it to scale runners; deploy a shared API "
                    "server and `sky api login` to it, or set provider.skypilot.api_server",
                )
        return endpoint

    def start_gateway(self, spec: GatewaySpec) -> GatewayHandle:
        cluster = tasks.gateway_cluster_name(spec.stack)
        endpoint = self.gateway_endpoint()
        try:
            task = self.gateway_task(spec, cluster, endpoint)
        except SkyformError as exc:
            raise ProvisioningError("gateway", "other", str(exc)) from None
        if not self.dryrun:
            # A new gateway owns no runners yet: any runner cluster of this stack was
            # left by a gateway that is gone, and would otherwise run unmanaged.
            self.sweep(keep={cluster}, stack=spec.stack)
        job_id = self._launch("gateway", task, cluster)
        url = "" if self.dryrun else self.client.endpoint(cluster, spec.port)
        info: dict[str, object] = {"cluster": cluster, "job_id": job_id, "dryrun": self.dryrun}
        if spec.tls is not None:
            url = _https(url)
            info["ca_file"] = str(spec.tls.ca or spec.tls.cert)
            if spec.tls.server_name:
                # Its certificate could not name the head IP, unknown until launch.
                info["tls_server_name"] = spec.tls.server_name
        return GatewayHandle(stack=spec.stack, url=url, provider=NAME, info=info)

    def gateway_alive(self, handle: GatewayHandle) -> bool:
        return self._running(handle.info)

    def stop_gateway(self, handle: GatewayHandle, grace: float = 10.0) -> None:
        """Down the gateway cluster, then every runner cluster of its stack."""
        self._down(str(handle.info.get("cluster", "")))
        self.sweep(stack=handle.stack)

    def sweep(self, keep: Collection[str] = (), stack: str | None = None) -> list[str]:
        """Down every cluster of the stack whose name is not in `keep`; returns those downed.

        Finds clusters by name, so it also finds runners whose gateway died before
        it could stop them. Stopping a gateway sweeps its stack's runners (so
        `destroy` leaves nothing); starting one sweeps runners a lost gateway left.
        """
        prefix = tasks.stack_prefix(stack or self.stack)
        doomed = [
            r.name
            for r in self.client.status(None)
            if r.name.startswith(prefix)
            and tasks.parse_cluster_name(r.name) is not None
            and r.name not in keep
        ]
        for name in doomed:
            self._down(name)
        return doomed


def _https(url: str) -> str:
    """SkyPilot's endpoint URL with the scheme the server speaks (it reports http)."""
    return "https://" + url.split("://", 1)[-1] if url else url


def _gateway_tls_files(spec: GatewaySpec) -> dict[str, Path]:
    """What the gateway cluster gets under `<state-dir>/tls/` (never the CA's key)."""
    if spec.tls is None or spec.runner_tls is None or spec.runner_tls.ca is None:
        raise SkyformError(
            "a gateway on SkyPilot serves TLS and verifies its runners: it needs its "
            "certificate and the stack's runner certificate and CA"
        )
    return {
        "gateway.pem": spec.tls.cert,
        "gateway.key": spec.tls.key,
        "runner.pem": spec.runner_tls.cert,
        "runner.key": spec.runner_tls.key,
        "ca.pem": spec.runner_tls.ca,
    }


def _gateway_url_args(spec: GatewaySpec) -> list[str]:
    args = ["--public-url", spec.public_url] if spec.public_url else []
    for proxy in spec.trusted_proxies:
        args += ["--trusted-proxy", proxy]
    return args


def _write_task_file(path: Path, task: Any) -> None:
    """The task as YAML, written before secrets are attached (so none reach disk)."""
    import yaml

    config = task.to_yaml_config()
    config.pop("secrets", None)
    config.pop("_user_specified_yaml", None)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
