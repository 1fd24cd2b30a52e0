"""Helpers for the SkyPilot provider's tests: an offline SkyPilot HOME, catalog
lookups, and a fake cloud behind the provider's SkyPilot client calls."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

SKY_ENV = {
    "SKYPILOT_DISABLE_USAGE_COLLECTION": "1",
    "DO_NOT_TRACK": "1",
    "AWS_EC2_METADATA_DISABLED": "true",
    # SkyPilot builds its own wheel for a launch; use the installed setuptools
    # instead of fetching build requirements from an index.
    "PIP_NO_BUILD_ISOLATION": "false",
}


# The catalog subsets live in the repository (see their README): a fresh clone
# plans offline with nothing beside it.
CATALOGS = REPO / "tests" / "data" / "skypilot-catalogs"


def catalogs_dir() -> Path:
    if not (CATALOGS / "v8" / "lambda" / "vms.csv").is_file():
        raise RuntimeError(f"SkyPilot catalog subsets missing from the checkout: {CATALOGS}")
    return CATALOGS


def make_sky_home(home: Path) -> Path:
    """A HOME where SkyPilot plans offline: catalogs, Lambda only, fake Lambda key."""
    catalogs = home / ".sky" / "catalogs" / "v8"
    catalogs.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(catalogs_dir() / "v8", catalogs)
    (home / ".sky" / "config.yaml").write_text("allowed_clouds: [lambda]\n")
    keys = home / ".lambda_cloud"
    keys.mkdir()
    (keys / "lambda_keys").write_text("api_key = not-a-real-key\n")
    return home


def stack_tls(work: Path, stack: str = "demo") -> dict[str, Any]:
    """The gateway's and runners' TLS material, issued for real by the stack CA under `work`.

    `tls` and `runner_tls` as a GatewaySpec takes them (RunnerSpec takes `runner_tls` as `tls`).
    """
    from skyform.engine.tls import ensure_leaf
    from skyform.providers.base import TLSMaterial
    from skyform.tlscontext import gateway_server_name, runner_server_name

    gateway = ensure_leaf(work, stack, "gateway", [])
    runner = ensure_leaf(work, stack, "runner", [])
    return {
        "tls": TLSMaterial(gateway.cert, gateway.key, gateway.ca, gateway_server_name(stack)),
        "runner_tls": TLSMaterial(runner.cert, runner.key, runner.ca, runner_server_name(stack)),
    }


def seed_enabled_clouds() -> None:
    """Record Lambda as enabled, as `sky check` would with working credentials."""
    from sky import global_user_state
    from sky.clouds import cloud as cloud_lib

    global_user_state.set_allowed_clouds(["lambda"], "default")
    global_user_state.set_enabled_clouds(["Lambda"], cloud_lib.CloudCapability.COMPUTE, "default")


def catalog_rows(accelerator: str | None, count: int = 1) -> list[dict[str, str]]:
    """Lambda catalog rows for an accelerator (None: CPU-only instances)."""
    with open(catalogs_dir() / "v8" / "lambda" / "vms.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if accelerator is None:
        return [r for r in rows if not r["AcceleratorName"]]
    return [
        r
        for r in rows
        if r["AcceleratorName"] == accelerator and float(r["AcceleratorCount"] or 0) == count
    ]


class FakeCloud:
    """The answer a cloud would give, behind the provider's SkyPilot client calls.

    Every launch still goes through real SkyPilot first: the task must survive a
    YAML round trip and the real optimizer must find it an instance in the
    catalogs. Then, instead of a cloud provisioning machines, this records a
    cluster (UP, with an address) or raises what SkyPilot raises when a cloud
    says no (capacity, quota, ...), optionally leaving a half-made INIT cluster
    behind as a failed provisioning can.
    """

    def __init__(self) -> None:
        from skyform.providers.skypilot import ClusterRecord

        self._record = ClusterRecord
        self.clusters: dict[str, Any] = {}
        self.jobs: dict[str, str] = {}
        self.failures: list[BaseException] = []
        self.leave_init = False
        self.down_fails = False
        self.launched: list[tuple[str, Any]] = []
        self._next_ip = 10

    def launch(self, task: Any, cluster_name: str, *, dryrun: bool, timeout: float) -> int | None:
        import sky
        from sky import sky_logging

        sky.Task.from_yaml_config(task.to_yaml_config())
        dag = sky.Dag()
        dag.add(task)
        with sky_logging.silent():
            best = sky.optimizer.Optimizer.optimize(dag, quiet=True).tasks[0].best_resources
        self.launched.append((cluster_name, best))
        if self.failures:
            if self.leave_init:
                self.clusters[cluster_name] = self._record(cluster_name, "INIT")
            raise self.failures.pop(0)
        if dryrun:
            return None
        self._next_ip += 1
        self.clusters[cluster_name] = self._record(
            cluster_name, "UP", head_ip=f"10.0.0.{self._next_ip}", resources=repr(best)
        )
        self.jobs[cluster_name] = "RUNNING"
        return 1

    def status(self, cluster_names: list[str] | None = None) -> list[Any]:
        names = cluster_names if cluster_names is not None else list(self.clusters)
        return [self.clusters[n] for n in names if n in self.clusters]

    def endpoint(self, cluster_name: str, port: int) -> str:
        return f"http://{self.clusters[cluster_name].head_ip}:{port}"

    def job_running(self, cluster_name: str, job_id: int | None) -> bool:
        return self.jobs.get(cluster_name) == "RUNNING"

    def down(self, cluster_name: str) -> None:
        if self.down_fails:
            raise RuntimeError("the cloud did not answer the terminate call")
        self.clusters.pop(cluster_name, None)
        self.jobs.pop(cluster_name, None)

    def api_server(self) -> tuple[str, bool]:
        return "http://127.0.0.1:46580", True
