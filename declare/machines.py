"""The machine-type catalog: one name per kind of machine a runner can get.

Providers map these names to what they can rent (the local provider runs
everything on this host; SkyPilot turns them into `sky.Resources`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from skyform.errors import AppDefinitionError
from skyform.suggest import did_you_mean


@dataclass(frozen=True)
class MachineType:
    """What a runner of this type gets."""

    name: str
    accelerator: str | None  # SkyPilot accelerator name, e.g. "H100"
    accelerator_count: int
    cpus: int  # minimum vCPUs
    memory_gb: int  # minimum memory

    @property
    def needs_gpu(self) -> bool:
        return self.accelerator is not None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


MACHINE_TYPES: dict[str, MachineType] = {
    m.name: m
    for m in (
        MachineType("CPU", None, 0, 4, 16),
        MachineType("GPU-H100", "H100", 1, 16, 128),
        MachineType("GPU-H100x8", "H100", 8, 128, 1024),
        MachineType("GPU-B200", "B200", 1, 16, 128),
        MachineType("GPU-B200x8", "B200", 8, 128, 1024),
    )
}


# Accelerators that may stand in for another on one's own server: each is at
# least as capable as the key (same or newer architecture, at least as much
# memory, a superset of its features). Nothing else substitutes: an H100 app
# never lands on an A100, and a B200 app never on an H100.
CAPABLE_SUBSTITUTES: dict[str, tuple[str, ...]] = {
    "H100": ("H200", "B200"),
    "H200": ("B200",),
    "B200": (),
}


def can_stand_in(offered: str, wanted: str) -> bool:
    """Whether a GPU model `offered` may serve a machine type asking for `wanted`."""
    return offered == wanted or offered in CAPABLE_SUBSTITUTES.get(wanted, ())


def get_machine_type(name: str) -> MachineType:
    """Look a machine type up by name; unknown names suggest the nearest one."""
    try:
        return MACHINE_TYPES[name]
    except KeyError:
        raise AppDefinitionError(
            f'unknown machine type "{name}"{did_you_mean(name, MACHINE_TYPES)}; '
            f"known: {', '.join(MACHINE_TYPES)}"
        ) from None


def machine_type_names(value: str | list[str]) -> list[str]:
    """Normalise `machine_type` (one name or an ordered fallback list) and check each."""
    names = [value] if isinstance(value, str) else list(value)
    if not names:
        raise AppDefinitionError("machine_type must name at least one machine type")
    for name in names:
        get_machine_type(name)
    return names
