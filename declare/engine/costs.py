"""What a plan costs: each app's hourly price at min and max runners, by the provider's prices.

The one cost model (`Provider.price()` feeds it), shown by `plan` where the
provider can price its machines (SkyPilot); the local provider prices nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from skyform.engine.plan import ResourceChange
from skyform.engine.stackfile import Stack
from skyform.errors import SkyformError

if TYPE_CHECKING:
    from skyform.providers.base import Provider


def plan_costs(
    stack: Stack, provider: Provider | None, changes: dict[str, ResourceChange]
) -> dict[str, Any] | None:
    """The plan's cost section: each desired app's size, priced by the provider."""
    if provider is None:
        return None
    sizes: dict[str, tuple[str, int, int]] = {}
    for name in sorted(stack.apps):
        change = changes.get(name)
        after = change.after if change else None
        if after:
            sizes[name] = (after["machine_type"][0], after["min_runners"], after["max_runners"])
    return estimate_costs(provider, sizes)


def estimate_costs(
    provider: Provider, apps: Mapping[str, tuple[str, int, int]]
) -> dict[str, Any] | None:
    """Hourly cost per app at min and max runners, where the provider can price machines.

    `apps` is {name: (machine type, min_runners, max_runners)}. An app whose
    machine type the provider does not price (`Provider.price` is None, or
    raises a user error) is left out; None when no app is priced. Pure given
    the provider's prices, so it is tested without a cloud.
    """
    apps_out: dict[str, Any] = {}
    total_min = total_max = 0.0
    cache: dict[str, Any] = {}
    for name, (mt, min_runners, max_runners) in sorted(apps.items()):
        if mt not in cache:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    cache[mt] = provider.price(mt)
            except SkyformError:
                cache[mt] = None
        price = cache[mt]
        if price is None:
            continue
        lo = price.hourly_usd * min_runners
        hi = price.hourly_usd * max_runners
        total_min += lo
        total_max += hi
        apps_out[name] = {
            "machine_type": mt,
            "instance_type": price.instance_type,
            "cloud": price.cloud,
            "region": price.region,
            "hourly_usd": price.hourly_usd,
            "hourly_usd_min": round(lo, 4),
            "hourly_usd_max": round(hi, 4),
        }
    if not apps_out:
        return None
    return {
        "apps": apps_out,
        "hourly_usd_min": round(total_min, 4),
        "hourly_usd_max": round(total_max, 4),
    }
