"""Launch, status and teardown through the provider, with a fake only where a cloud
would answer: tasks and placement go through real SkyPilot first."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from support.skypilot import FakeCloud, stack_tls

from skyform.providers.base import GatewaySpec, RunnerSpec
from skyform.providers.skypilot import ProvisioningError, SkyPilotProvider

pytestmark = [pytest.mark.skypilot, pytest.mark.slow]

CAPACITY = (
    "insufficient-capacity: Not enough capacity to fulfill launch request. "
    "Regions with capacity available: none"
)


def spec(tmp_path: Path, app: str = "embed", machine_types: tuple[str, ...] = ("GPU-H100",)):
    bundle = tmp_path / f"{app}.skyb"
    bundle.write_bytes(b"bundle")
    return RunnerSpec(
        stack="demo",
        app=app,
        revision="a1b2c3d4e5f6",
        bundle_path=bundle,
        machine_types=list(machine_types),
        requirements=[],
        python_version="3.11",
        env={"SKYFORM_RUNNER_TOKEN": "tok"},
        tls=stack_tls(tmp_path)["runner_tls"],
    )


def capacity_error():
    from sky import exceptions
    from sky.provision.lambda_cloud.lambda_utils import LambdaCloudError

    return exceptions.ResourcesUnavailableError(
        "Failed to provision all possible launchable resources. Relax the task's resource "
        "requirements: 1x Lambda({'H100': 1})",
        failover_history=[LambdaCloudError(CAPACITY)],
    )


def test_start_list_alive_stop(enabled, fake_cloud: FakeCloud, tmp_path: Path):
    provider = SkyPilotProvider("demo", tmp_path, clouds=["lambda"], client=fake_cloud)
    first = provider.start_runner(spec(tmp_path))
    second = provider.start_runner(spec(tmp_path, "hello", ("CPU",)))
    # Runners are reached over the network: always https.
    assert first.url.startswith("https://10.0.0.") and first.url.endswith(":8080")
    assert first.info["cluster"] == f"sf-demo--embed--a1b2c3d4--{first.runner_id}"
    # The real optimizer placed it: an H100 instance on Lambda.
    placed = dict(fake_cloud.launched)[first.info["cluster"]]
    assert placed.accelerators == {"H100": 1} and str(placed.cloud) == "Lambda"

    other_stack = SkyPilotProvider("other", tmp_path, clouds=["lambda"], client=fake_cloud)
    other_stack.start_runner(replace(spec(tmp_path, "embed"), stack="other"))
    listed = provider.list_runners("demo")
    assert sorted((h.app, h.runner_id) for h in listed) == sorted(
        [("embed", first.runner_id), ("hello", second.runner_id)]
    )
    assert {h.url for h in listed} == {first.url, second.url}
    assert provider.runner_alive(first)

    fake_cloud.jobs[first.info["cluster"]] = "FAILED"  # the runner process exited
    assert not provider.runner_alive(first)
    task_files = tmp_path / "skypilot" / "tasks"
    assert (task_files / f"{first.info['cluster']}.yaml").exists()
    provider.stop_runner(first)
    assert first.info["cluster"] not in fake_cloud.clusters
    assert not (task_files / f"{first.info['cluster']}.yaml").exists()
    assert (task_files / f"{second.info['cluster']}.yaml").exists()
    assert [h.app for h in provider.list_runners("demo")] == ["hello"]
    # A sweep (destroy, or orphans of a dead gateway) finds this stack's clusters by name.
    other = next(n for n in fake_cloud.clusters if n.startswith("sf-other--"))
    assert provider.sweep(keep={"unrelated"}) == [second.info["cluster"]]
    assert list(fake_cloud.clusters) == [other]


def test_no_capacity_surfaces_skypilots_reason_and_leaves_nothing(
    enabled, fake_cloud: FakeCloud, tmp_path: Path
):
    provider = SkyPilotProvider("demo", tmp_path, clouds=["lambda"], client=fake_cloud)
    fake_cloud.failures = [capacity_error()]
    fake_cloud.leave_init = True  # a half-made cluster, as a failed provisioning can leave
    with pytest.raises(ProvisioningError) as info:
        provider.start_runner(spec(tmp_path))
    err = info.value
    assert (err.app, err.kind, err.leftover) == ("embed", "capacity", None)
    assert "Not enough capacity to fulfill launch request" in err.reason
    assert str(err).startswith("embed: capacity: Failed to provision")
    assert fake_cloud.clusters == {}  # what exists: nothing
    assert provider.list_runners("demo") == []
    # The next attempt retries and succeeds.
    handle = provider.start_runner(spec(tmp_path))
    assert provider.runner_alive(handle)


def test_quota_and_failed_cleanup_are_reported(enabled, fake_cloud: FakeCloud, tmp_path: Path):
    from sky import exceptions

    provider = SkyPilotProvider("demo", tmp_path, clouds=["lambda"], client=fake_cloud)
    fake_cloud.failures = [
        exceptions.ResourcesUnavailableError(
            "Failed to provision all possible launchable resources.",
            failover_history=[
                RuntimeError(
                    "VcpuLimitExceeded: You have requested more vCPU "
                    "capacity than your current vCPU quota allows"
                )
            ],
        )
    ]
    fake_cloud.leave_init = True
    fake_cloud.down_fails = True
    with pytest.raises(ProvisioningError) as info:
        provider.start_runner(spec(tmp_path))
    assert info.value.kind == "quota"
    assert info.value.leftover is not None
    assert info.value.leftover in fake_cloud.clusters  # it does exist, and the error says so
    assert f"sky down {info.value.leftover}" in str(info.value)


def test_timeout_is_a_provisioning_error(enabled, fake_cloud: FakeCloud, tmp_path: Path):
    provider = SkyPilotProvider(
        "demo", tmp_path, clouds=["lambda"], provision_timeout_minutes=1, client=fake_cloud
    )
    fake_cloud.failures = [TimeoutError("SkyPilot request 1234 did not finish in 60s")]
    fake_cloud.leave_init = True
    with pytest.raises(ProvisioningError) as info:
        provider.start_runner(spec(tmp_path))
    assert info.value.kind == "timeout"
    assert fake_cloud.clusters == {}


def test_gateway_lifecycle_sweeps_runners(enabled, fake_cloud: FakeCloud, tmp_path: Path):
    provider = SkyPilotProvider(
        "demo",
        tmp_path,
        clouds=["lambda"],
        api_server="http://sky.internal:46580",
        client=fake_cloud,
    )
    left_behind = provider.start_runner(spec(tmp_path))  # a runner whose gateway is gone
    handle = provider.start_gateway(
        GatewaySpec(
            stack="demo", port=8765, state_dir=tmp_path / "gw", env={}, **stack_tls(tmp_path)
        )
    )
    assert handle.info["cluster"] == "sf-demo--gateway"
    assert handle.url.startswith("https://") and handle.url.endswith(":8765")
    # The CLI verifies it against the stack CA by its fixed name (its IP was unknown at issue).
    assert handle.info["tls_server_name"] == "gateway.demo.skyform.internal"
    assert str(handle.info["ca_file"]).endswith("ca.pem")
    assert left_behind.info["cluster"] not in fake_cloud.clusters
    placed = dict(fake_cloud.launched)["sf-demo--gateway"]
    assert placed.accelerators is None and placed.instance_type.startswith("cpu_")
    assert provider.gateway_alive(handle)
    runner = provider.start_runner(spec(tmp_path))
    assert [h.runner_id for h in provider.list_runners("demo")] == [runner.runner_id]
    # Stopping the gateway (destroy) leaves no cluster of the stack behind.
    provider.stop_gateway(handle)
    assert not provider.gateway_alive(handle)
    assert fake_cloud.clusters == {}
