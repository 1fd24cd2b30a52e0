"""The provider contract: `Provider` states it whole; callers rely on it without probing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from skyform.engine.costs import estimate_costs
from skyform.errors import SkyformError
from skyform.providers import provider_class
from skyform.providers.base import (
    GatewayHandle,
    GatewaySpec,
    Price,
    Provider,
    RunnerHandle,
    RunnerSpec,
    local_environment_key,
)
from skyform.providers.environments import environment_key, skyform_version
from skyform.providers.local import LocalProvider
from skyform.providers.skypilot import SkyPilotProvider


class Minimal(Provider):
    """Only what every provider must do; every optional part left at its default."""

    name = "minimal"

    def start_runner(self, spec: RunnerSpec) -> RunnerHandle:
        return RunnerHandle(spec.runner_id, spec.app, spec.revision, "http://x", self.name)

    def runner_alive(self, handle: RunnerHandle) -> bool:
        return False

    def stop_runner(self, handle: RunnerHandle, grace: float = 10.0) -> None:
        return None

    def list_runners(self, stack: str) -> list[RunnerHandle]:
        return []

    def start_gateway(self, spec: GatewaySpec) -> GatewayHandle:
        return GatewayHandle(spec.stack, "http://x", self.name)

    def gateway_alive(self, handle: GatewayHandle) -> bool:
        return False

    def stop_gateway(self, handle: GatewayHandle, grace: float = 10.0) -> None:
        return None


def test_a_provider_missing_a_required_method_cannot_be_made() -> None:
    class Nothing(Provider):
        name = "nothing"

    with pytest.raises(TypeError, match=r"start_runner.*stop_gateway"):
        Nothing()  # type: ignore[abstract]
    partial = {k: v for k, v in vars(Minimal).items() if k != "runner_alive"}
    with pytest.raises(TypeError, match="runner_alive"):
        type("NoRunnerAlive", (Provider,), partial)()


def test_the_defaults_behave_as_documented(tmp_path: Path) -> None:
    provider = Minimal()
    spec = RunnerSpec("demo", "hello", "r1", tmp_path / "b", ["CPU"], [], "3.11")
    handle = RunnerHandle("r-1", "hello", "r1", "http://x", "minimal")
    assert provider.runs_on_this_host is False
    assert provider.price("CPU") is None  # unpriced: the plan shows no cost
    assert provider.prepare_runner(spec) is None  # nothing to prepare
    assert provider.runner_exit_code(handle) is None  # unknown
    assert provider.should_stop_gateway(GatewayHandle("demo", "", "minimal")) is True
    assert provider.stop_orphans("demo", tmp_path) == []  # nothing to find
    assert list(tmp_path.iterdir()) == []  # and nothing touched
    # The environment key is the local recipe, for this skyform install.
    want = environment_key(["rich>=13"], "3.11", skyform_version())
    assert provider.environment_key(["rich>=13"], "3.11") == want
    assert local_environment_key(("rich>=13",), "3.11") == want
    assert provider.environment_key(["rich>=14"], "3.11") != want


def test_each_provider_states_its_capabilities() -> None:
    assert issubclass(LocalProvider, Provider) and issubclass(SkyPilotProvider, Provider)
    assert provider_class("local") is LocalProvider
    assert provider_class({"local": {"runner_tls": True}}) is LocalProvider
    assert provider_class({"skypilot": {"clouds": ["aws"]}}) is SkyPilotProvider
    assert LocalProvider.runs_on_this_host is True
    assert SkyPilotProvider.runs_on_this_host is False
    with pytest.raises(SkyformError, match='unknown provider "lokal"'):
        provider_class("lokal")


def test_local_stop_orphans_stops_only_this_state_dirs_gateways(tmp_path: Path) -> None:
    # Stand-ins whose command lines look like gateways of two runtime dirs.
    mine, other = tmp_path / "mine", tmp_path / "other"
    sleep = "import time; time.sleep(120)"
    procs = [
        subprocess.Popen([sys.executable, "-c", sleep, "skyform.runtime.gateway", str(d)])
        for d in (mine, other)
    ]
    try:
        provider = LocalProvider("demo", tmp_path / "runtime")
        assert provider.stop_orphans("demo", mine) == [procs[0].pid]
        assert procs[0].wait(timeout=30) is not None
        assert procs[1].poll() is None  # another stack's gateway is left alone
        assert provider.stop_orphans("demo", mine) == []
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


class PriceList(Minimal):
    """A provider with a fixed price list (a cloud's API cannot be reached here)."""

    def price(self, machine_type: str) -> Price | None:
        if machine_type == "GPU-H100":
            raise SkyformError("no H100 anywhere")
        if machine_type == "CPU":
            return Price("CPU", "m6i.xlarge", "aws", None, 0.2)
        return None


def test_the_cost_model_prices_what_the_provider_prices() -> None:
    costs = estimate_costs(
        PriceList(),
        {"a": ("CPU", 1, 3), "b": ("GPU-B200", 0, 2), "c": ("GPU-H100", 1, 1), "d": ("CPU", 0, 1)},
    )
    assert costs is not None
    assert sorted(costs["apps"]) == ["a", "d"]  # b is unpriced, c's price failed
    assert costs["apps"]["a"]["hourly_usd_min"] == 0.2
    assert costs["apps"]["a"]["hourly_usd_max"] == 0.6
    assert (costs["hourly_usd_min"], costs["hourly_usd_max"]) == (0.2, 0.8)
    assert estimate_costs(Minimal(), {"a": ("CPU", 1, 3)}) is None  # nothing priced
