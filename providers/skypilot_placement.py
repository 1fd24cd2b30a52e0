"""Where SkyPilot would put an app, and what it would cost: machine types as
`sky.Resources` candidates, and the optimizer's pick with its hourly price.

Pure planning: nothing here launches anything. `sky` is imported inside the
functions, so importing this module stays cheap.

An app with one machine type gets the stack's clouds x regions as `any_of`
candidates (the optimizer takes the cheapest that is enabled and has capacity);
an app with a machine-type fallback list gets `ordered` candidates: machine
types in the app's order, and within one type the clouds in the stack's order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from skyform.errors import SkyformError
from skyform.machines import get_machine_type
from skyform.providers.base import Price
from skyform.providers.environments import ANSI_ESCAPE
from skyform.suggest import did_you_mean

if TYPE_CHECKING:
    import sky


def clean_message(text: str) -> str:
    """SkyPilot's message on one line, without terminal colour codes."""
    return " ".join(ANSI_ESCAPE.sub("", text).split())


# --- resources -------------------------------------------------------------------


def _check_clouds(clouds: Sequence[str]) -> list[str]:
    """Canonical cloud names; unknown ones fail with SkyPilot's list and a suggestion."""
    from sky.utils import registry

    known = sorted(registry.CLOUD_REGISTRY.keys())
    names = []
    for cloud in clouds:
        try:
            found = registry.CLOUD_REGISTRY.from_str(cloud)
        except ValueError:
            found = None
        if found is None:
            raise SkyformError(
                f'provider.skypilot.clouds: unknown cloud "{cloud}"{did_you_mean(cloud, known)}; '
                f"SkyPilot knows: {', '.join(known)}"
            )
        names.append(str(found).lower())
    return names


def _placements(clouds: Sequence[str], regions: Sequence[str]) -> list[str | None]:
    """`infra` strings ("lambda", "aws/us-east-1") for the stack's clouds and regions.

    A region applies to the clouds that have it; every region must belong to at
    least one listed cloud, and every cloud must keep at least one region.
    """
    if not clouds:
        if regions:
            raise SkyformError("provider.skypilot.regions needs provider.skypilot.clouds too")
        return [None]  # any enabled cloud: the optimizer chooses
    canonical = _check_clouds(clouds)
    if not regions:
        return list(canonical)
    from sky.utils import registry

    placements: list[str | None] = []
    used: set[str] = set()
    for cloud in canonical:
        cloud_obj = registry.CLOUD_REGISTRY.from_str(cloud)
        if cloud_obj is None:  # _check_clouds accepted it, so SkyPilot knows it
            raise SkyformError(f"provider.skypilot.clouds: SkyPilot does not know {cloud!r}")
        mine = []
        for region in regions:
            try:
                cloud_obj.validate_region_zone(region, None)
            except (ValueError, SkyformError):
                continue
            mine.append(region)
            used.add(region)
        if not mine:
            raise SkyformError(
                f'provider.skypilot: none of regions {list(regions)} is a region of "{cloud}"'
            )
        placements.extend(f"{cloud}/{region}" for region in mine)
    unused = [r for r in regions if r not in used]
    if unused:
        raise SkyformError(
            f"provider.skypilot.regions: {', '.join(unused)} is not a region of "
            f"any listed cloud ({', '.join(canonical)})"
        )
    return placements


def candidates_ordered(machine_type_names: Sequence[str]) -> bool:
    """Fallback lists keep the app's order; a single machine type lets the optimizer choose."""
    return len(machine_type_names) > 1


def resource_config(
    machine_type: str,
    infra: str | None,
    *,
    use_spot: bool = False,
    ports: Sequence[int] = (),
    autostop_minutes: int | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One candidate as the dict `sky.Resources.from_yaml_config` reads."""
    mt = get_machine_type(machine_type)
    config: dict[str, Any] = {}
    if infra:
        config["infra"] = infra
    if mt.accelerator:
        config["accelerators"] = {mt.accelerator: mt.accelerator_count}
    else:
        # A bare CPU request must say so: an unconstrained request may resolve to a
        # GPU instance.
        config["cpus"] = f"{mt.cpus}+"
        config["memory"] = f"{mt.memory_gb}+"
    config["use_spot"] = bool(use_spot)
    if ports:
        config["ports"] = [int(p) for p in ports]
    if autostop_minutes is not None:
        config["autostop"] = {"idle_minutes": int(autostop_minutes), "down": True}
    if labels:
        config["labels"] = dict(labels)
    return config


def resources_for(
    machine_type_names: Sequence[str],
    clouds: Sequence[str] = (),
    regions: Sequence[str] = (),
    use_spot: bool = False,
    *,
    ports: Sequence[int] = (),
    autostop_minutes: int | None = None,
    labels: Mapping[str, str] | None = None,
) -> list[sky.Resources]:
    """The candidates for an app, in preference order.

    `candidates_ordered(machine_type_names)` says whether SkyPilot should take
    them in order (`ordered`, a list) or pick the cheapest (`any_of`, a set).
    """
    import sky

    if not machine_type_names:
        raise SkyformError("an app needs at least one machine type")
    configs = [
        resource_config(
            mt,
            infra,
            use_spot=use_spot,
            ports=ports,
            autostop_minutes=autostop_minutes,
            labels=labels,
        )
        for mt in machine_type_names
        for infra in _placements(clouds, regions)
    ]
    result = []
    for config in configs:
        try:
            (resources,) = sky.Resources.from_yaml_config(config)
            result.append(resources)
        except ValueError as exc:
            raise SkyformError(f"SkyPilot refused {config}: {clean_message(str(exc))}") from None
    return result


def set_resources(task: sky.Task, machine_types: Sequence[str], resources: list[Any]) -> None:
    task.set_resources(list(resources) if candidates_ordered(machine_types) else set(resources))


# --- prices ----------------------------------------------------------------------


@dataclass(frozen=True)
class Quote:
    """The optimizer's pick for an app's candidates, or why there is none."""

    price: Price | None
    reason: str | None = None


def _machine_type_of(resources: Any, machine_types: Sequence[str]) -> str:
    """Which of `machine_types` the optimizer's pick satisfies."""
    accelerators = resources.accelerators or {}
    for name in machine_types:
        mt = get_machine_type(name)
        if mt.accelerator is None and not accelerators:
            return name
        if mt.accelerator and accelerators.get(mt.accelerator) == mt.accelerator_count:
            return name
    return machine_types[0]


def quote(
    machine_type_names: Sequence[str],
    clouds: Sequence[str] = (),
    regions: Sequence[str] = (),
    use_spot: bool = False,
) -> Quote:
    """What SkyPilot's optimizer would launch for these candidates, and its hourly price.

    Runs the optimizer in this process against SkyPilot's catalogs and the
    clouds `sky check` enabled; launches nothing.
    """
    import sky
    from sky import exceptions, sky_logging

    resources = resources_for(machine_type_names, clouds, regions, use_spot)
    task = sky.Task(name="skyform-quote", run=":")
    set_resources(task, machine_type_names, resources)
    dag = sky.Dag()
    dag.add(task)
    try:
        with sky_logging.silent():
            best = sky.optimizer.Optimizer.optimize(dag, quiet=True).tasks[0].best_resources
    except (exceptions.ResourcesUnavailableError, exceptions.NoCloudAccessError) as exc:
        return Quote(None, clean_message(str(exc)))
    if best is None:
        return Quote(None, "the optimizer picked nothing")
    return Quote(
        Price(
            machine_type=_machine_type_of(best, machine_type_names),
            instance_type=str(best.instance_type),
            cloud=str(best.cloud),
            region=best.region,
            hourly_usd=round(float(best.get_cost(3600)), 4),
        )
    )


def price(
    machine_type: str,
    clouds: Sequence[str] = (),
    regions: Sequence[str] = (),
    use_spot: bool = False,
) -> Price | None:
    """The optimizer's pick for one machine type, per hour; None when nothing fits."""
    return quote([machine_type], clouds, regions, use_spot).price
