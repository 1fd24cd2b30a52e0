"""Machine types -> sky.Resources, and what SkyPilot's optimizer picks and charges.

Real SkyPilot against the catalog subsets (Lambda, CPU/H100/B200 rows), offline.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.skypilot import catalog_rows

from skyform.engine.costs import estimate_costs
from skyform.errors import SkyformError
from skyform.providers import create_provider
from skyform.providers.skypilot import (
    ProvisioningError,
    SkyPilotProvider,
    candidates_ordered,
    price,
    provisioning_error,
    quote,
    resources_for,
)

pytestmark = [pytest.mark.skypilot, pytest.mark.slow]


def cheapest(accelerator: str | None, count: int = 1, min_cpus: int = 0) -> tuple[str, float]:
    rows = [r for r in catalog_rows(accelerator, count) if float(r["vCPUs"]) >= min_cpus]
    best = min(rows, key=lambda r: float(r["Price"]))
    return best["InstanceType"], float(best["Price"])


def test_machine_types_map_to_resources(enabled):
    cpu, h100, b200, h100x8 = (
        resources_for([name])[0] for name in ("CPU", "GPU-H100", "GPU-B200", "GPU-H100x8")
    )
    assert cpu.accelerators is None
    assert cpu.cpus == "4+"
    assert h100.accelerators == {"H100": 1}
    assert b200.accelerators == {"B200": 1}
    assert h100x8.accelerators == {"H100": 8}
    assert not h100.use_spot
    assert resources_for(["GPU-H100"], use_spot=True)[0].use_spot


def test_clouds_and_regions_become_candidates(enabled):
    candidates = resources_for(
        ["GPU-H100", "GPU-B200"], ["lambda"], ["us-east-1", "us-west-1"], autostop_minutes=15
    )
    described = [(str(r.cloud), r.region, r.accelerators) for r in candidates]
    assert described == [
        ("Lambda", "us-east-1", {"H100": 1}),
        ("Lambda", "us-west-1", {"H100": 1}),
        ("Lambda", "us-east-1", {"B200": 1}),
        ("Lambda", "us-west-1", {"B200": 1}),
    ]
    # Autostop (down) is on every candidate: no cluster can bill forever.
    assert all(r.autostop_config.enabled and r.autostop_config.down for r in candidates)
    assert all(r.autostop_config.idle_minutes == 15 for r in candidates)
    assert candidates_ordered(["GPU-H100", "GPU-B200"])
    assert not candidates_ordered(["GPU-H100"])


@pytest.mark.parametrize(
    ("clouds", "regions", "message"),
    [
        (["lambdda"], [], 'unknown cloud "lambdda" (did you mean "lambda"?)'),
        (["lambda"], ["mars-north-1"], 'none of regions ["mars-north-1"] is a region of "lambda"'),
        ([], ["us-east-1"], "regions needs provider.skypilot.clouds"),
    ],
)
def test_bad_placement_is_a_clear_error(enabled, clouds, regions, message):
    with pytest.raises(SkyformError) as info:
        resources_for(["CPU"], clouds, regions)
    assert message.replace('["mars-north-1"]', "['mars-north-1']") in str(info.value)


def test_optimizer_picks_and_prices_cpu_h100_b200(enabled):
    for machine_type, accelerator, min_cpus in (
        ("CPU", None, 4),
        ("GPU-H100", "H100", 0),
        ("GPU-B200", "B200", 0),
    ):
        instance, hourly = cheapest(accelerator, min_cpus=min_cpus)
        picked = price(machine_type, ["lambda"])
        assert picked is not None, machine_type
        assert picked.machine_type == machine_type
        assert picked.cloud == "Lambda"
        assert picked.region
        assert (picked.instance_type, picked.hourly_usd) == (instance, hourly)


def test_ordered_fallback_keeps_the_apps_order(enabled):
    # B200 costs more than H100 in the catalog, yet an app that lists it first gets it.
    assert cheapest("B200")[1] > cheapest("H100")[1]
    picked = quote(["GPU-B200", "GPU-H100"], ["lambda"]).price
    assert picked is not None
    assert picked.machine_type == "GPU-B200"
    assert picked.instance_type == cheapest("B200")[0]


def test_nothing_fits_gives_skypilots_reason(enabled):
    # Lambda has no spot instances: the optimizer says so.
    answer = quote(["GPU-H100"], ["lambda"], use_spot=True)
    assert answer.price is None
    assert "Spot instances are not supported in Lambda" in answer.reason


def test_plan_cost_at_min_and_max_runners(enabled, tmp_path: Path):
    provider = create_provider(
        {"skypilot": {"clouds": ["lambda"]}}, stack="demo", runtime_dir=tmp_path
    )
    cost = estimate_costs(
        provider, {"embed": ("GPU-H100", 0, 4), "hello": ("CPU", 1, 2), "big": ("GPU-B200", 1, 1)}
    )
    _, cpu = cheapest(None, min_cpus=4)
    _, h100 = cheapest("H100")
    _, b200 = cheapest("B200")
    assert cost is not None
    assert cost["hourly_usd_min"] == pytest.approx(1 * cpu + 0 * h100 + 1 * b200)
    assert cost["hourly_usd_max"] == pytest.approx(2 * cpu + 4 * h100 + 1 * b200)
    assert cost["apps"]["embed"]["instance_type"] == cheapest("H100")[0]
    assert cost["apps"]["embed"]["hourly_usd"] == h100
    assert cost["apps"]["big"]["instance_type"] == cheapest("B200")[0]
    assert cost["apps"]["hello"]["machine_type"] == "CPU"
    # The provider contract's price() agrees with the plan's figures.
    assert provider.price("GPU-H100").hourly_usd == h100


def test_unknown_price_leaves_the_app_unpriced(enabled, tmp_path: Path):
    provider = SkyPilotProvider("demo", tmp_path, clouds=["lambda"], use_spot=True)
    assert provider.price("GPU-H100") is None
    assert estimate_costs(provider, {"embed": ("GPU-H100", 0, 2)}) is None


def test_disabled_cloud_maps_to_cloud_not_enabled(enabled):
    # Last in this module on purpose: asking for a disabled cloud makes SkyPilot re-check.
    answer = quote(["GPU-H100"], ["aws"])
    assert answer.price is None
    from sky import exceptions

    err = provisioning_error("embed", exceptions.NoCloudAccessError("Cloud access is not set up."))
    assert isinstance(err, ProvisioningError)
    assert err.kind == "cloud_not_enabled"
    assert str(err).startswith("embed: cloud not enabled: Cloud access is not set up.")
