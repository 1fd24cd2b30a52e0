"""GPUs on one's own server: the host's inventory and which runner gets which GPU.

Why: on a local host with GPUs every runner would otherwise see every GPU,
and two model runners on one GPU fight over its memory until one dies with
CUDA out-of-memory. So the local provider gives each runner exactly the GPUs
its machine type asks for (`CUDA_VISIBLE_DEVICES`: 1 for `GPU-H100`, 8 for
`GPU-H100x8`), never one GPU to two runners, and a runner that cannot get its
GPUs does not start: it waits, with a status that says why.

- `inventory()`: the host's GPUs, from NVML (`nvidia-ml-py`, when installed)
  or else `nvidia-smi --query-gpu=index,name,memory.total --format=csv`;
  empty on a host without either.
- `place()` and `capacity()`: pure functions of an inventory, so they are
  tested against recorded inventories (tests/data/gpus).
- A GPU model other than the one asked for is used only where the catalog
  (`skyform.machines.CAPABLE_SUBSTITUTES`) says it is at least as capable
  (an H200 for an H100), never the other way round.
"""

from __future__ import annotations

import contextlib
import functools
import re
import shutil
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from skyform.machines import CAPABLE_SUBSTITUTES, get_machine_type
from skyform.providers.base import CapacityUnavailable

# Accelerator names as the catalog spells them, found in the marketing names
# drivers report ("NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB").
_MODEL = re.compile(r"\b([ABHLV]\d{2,3}|GB\d{3}|RTX ?\w+)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Gpu:
    """One GPU of the host, as the driver reports it."""

    index: int
    name: str  # e.g. "NVIDIA H100 80GB HBM3"
    memory_mib: int

    @property
    def model(self) -> str:
        """The catalog's accelerator name ("H100"), or the driver's name when unknown."""
        match = _MODEL.search(self.name.replace("NVIDIA ", ""))
        return match.group(1).upper().replace(" ", "") if match else self.name


@dataclass(frozen=True)
class Placement:
    """The GPUs one runner gets, and for which of its machine types."""

    machine_type: str
    gpus: tuple[int, ...]
    model: str  # the model of the GPUs it got
    wanted: str  # the model its machine type asks for

    @property
    def substitute(self) -> bool:
        return self.model != self.wanted

    @property
    def cuda_visible_devices(self) -> str:
        return ",".join(str(i) for i in self.gpus)


# --------------------------------------------------------------------------- inventory


def parse_nvidia_smi_csv(text: str) -> list[Gpu]:
    """GPUs from `nvidia-smi --query-gpu=index,name,memory.total --format=csv[,noheader]`."""
    gpus: list[Gpu] = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < 3 or not fields[0].isdigit():
            continue  # the header, blank lines
        memory = re.match(r"(\d+)", fields[-1])
        gpus.append(
            Gpu(int(fields[0]), ",".join(fields[1:-1]), int(memory.group(1)) if memory else 0)
        )
    return sorted(gpus, key=lambda g: g.index)


@functools.lru_cache(maxsize=1)
def inventory() -> tuple[Gpu, ...]:
    """The host's GPUs (read once per process): NVML, else nvidia-smi, else none."""
    found = _from_nvml()
    if found is None:
        found = _from_nvidia_smi()
    return tuple(found or ())


def _from_nvml() -> list[Gpu] | None:
    try:
        import pynvml  # the nvidia-ml-py distribution
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # no driver: NVML is installed but there is nothing to ask
        return None
    try:
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024)
            gpus.append(Gpu(index, name, int(memory)))
        return gpus
    finally:
        with contextlib.suppress(Exception):
            pynvml.nvmlShutdown()


def _from_nvidia_smi() -> list[Gpu] | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    from skyform.providers.processes import command_output

    out = command_output([smi, "--query-gpu=index,name,memory.total", "--format=csv"])
    return parse_nvidia_smi_csv(out) if out is not None else None


# --------------------------------------------------------------------------- placement


def place(
    machine_types: Sequence[str], gpus: Sequence[Gpu], taken: Collection[int] = ()
) -> Placement | None:
    """The GPUs a new runner gets, or None when none of its machine types fits right now.

    Machine types are tried in the app's order. For each, the free GPUs of
    the wanted model come first, then stand-ins the catalog allows (in the
    catalog's order); a runner's GPUs are all of one model.
    """
    free = [g for g in gpus if g.index not in taken]
    for name in machine_types:
        machine = get_machine_type(name)
        if not machine.needs_gpu or machine.accelerator is None:
            continue
        wanted = machine.accelerator
        for model in _models_for(wanted, gpus):
            pick = [g.index for g in free if g.model == model][: machine.accelerator_count]
            if len(pick) == machine.accelerator_count:
                return Placement(name, tuple(pick), model, wanted)
    return None


def _models_for(wanted: str, gpus: Sequence[Gpu]) -> list[str]:
    """The wanted model, then the catalog's stand-ins for it, as far as the host has them."""
    present = {g.model for g in gpus}
    return [m for m in (wanted, *CAPABLE_SUBSTITUTES.get(wanted, ())) if m in present]


@dataclass(frozen=True)
class Capacity:
    """How many runners of one app the host can hold at once, and on what."""

    runners: int
    machine_type: str | None  # the machine type they would run as (None: none fits)
    model: str | None
    wanted: str | None

    def describe(self, app: str) -> str:
        if self.machine_type is None or self.runners == 0:
            return f"app {app}: this host's GPUs cannot hold one runner (it would wait for GPUs)"
        machine = get_machine_type(self.machine_type)
        per = f"{machine.accelerator_count} {self.model}"
        line = f"app {app}: this host can hold {self.runners} runner(s) of {self.machine_type}"
        line += f" ({per} each)"
        if self.model != self.wanted:
            line += (
                f"; {self.model} stands in for {self.wanted} "
                "(at least as capable, per the machine catalog)"
            )
        return line


def capacity(machine_types: Sequence[str], gpus: Sequence[Gpu]) -> Capacity:
    """Runners of an app with these machine types that fit on `gpus` at once (none running)."""
    taken: list[int] = []
    first: Placement | None = None
    count = 0
    while (placement := place(machine_types, gpus, taken)) is not None:
        first = first or placement
        taken.extend(placement.gpus)
        count += 1
    if first is None:
        return Capacity(0, None, None, None)
    return Capacity(count, first.machine_type, first.model, first.wanted)


# --------------------------------------------------------------------------- the ledger


class GpuLedger:
    """Which runner holds which GPUs on this host (the local provider keeps one).

    `claim` places a new runner and records its GPUs; `release` frees them
    when it stops. Claims of runners that have exited are dropped first
    (`alive`), so a crashed runner never keeps its GPUs.
    """

    def __init__(self, gpus: Sequence[Gpu] | None = None) -> None:
        self._gpus = tuple(inventory() if gpus is None else gpus)
        self._claims: dict[str, tuple[int, ...]] = {}
        self._lock = threading.Lock()

    @property
    def gpus(self) -> tuple[Gpu, ...]:
        return self._gpus

    def claim(
        self, runner_id: str, machine_types: Sequence[str], alive: Callable[[str], bool]
    ) -> dict[str, str]:
        """The environment the runner gets (`CUDA_VISIBLE_DEVICES`); its GPUs are now held.

        A host without GPUs changes nothing (GPU apps run on CPU there, as the
        plan warned). A CPU runner on a GPU host sees no GPU. Raises
        `CapacityUnavailable` when every machine type needs GPUs and not
        enough of them are free.
        """
        if not self._gpus:
            return {}
        if not any(get_machine_type(m).needs_gpu for m in machine_types):
            return {"CUDA_VISIBLE_DEVICES": ""}
        with self._lock:
            for other in [r for r in self._claims if not alive(r)]:
                del self._claims[other]
            taken = {i for held in self._claims.values() for i in held}
            placement = place(machine_types, self._gpus, taken)
            if placement is None:
                if any(not get_machine_type(m).needs_gpu for m in machine_types):
                    return {"CUDA_VISIBLE_DEVICES": ""}  # its CPU fallback
                raise CapacityUnavailable(self._busy_message(machine_types, taken))
            self._claims[runner_id] = placement.gpus
        # NVML and nvidia-smi number GPUs by PCI bus; CUDA, unless told, fastest first.
        return {
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
            "CUDA_VISIBLE_DEVICES": placement.cuda_visible_devices,
        }

    def release(self, runner_id: str) -> None:
        with self._lock:
            self._claims.pop(runner_id, None)

    def held(self) -> dict[str, tuple[int, ...]]:
        with self._lock:
            return dict(self._claims)

    def _busy_message(self, machine_types: Sequence[str], taken: Collection[int]) -> str:
        wanted = get_machine_type(machine_types[0])
        fits = capacity(machine_types, self._gpus)
        if fits.runners == 0:
            return (
                f"waiting for GPUs: {wanted.name} needs {wanted.accelerator_count} "
                f"{wanted.accelerator} and this host's GPUs "
                f"({', '.join(sorted({g.model for g in self._gpus}))}) cannot hold it"
            )
        return (
            f"waiting for a GPU: {wanted.name} needs {wanted.accelerator_count} "
            f"{wanted.accelerator}; {len(taken)} of this host's {len(self._gpus)} GPUs are in use "
            f"by other runners"
        )
