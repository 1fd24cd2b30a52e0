"""GPU placement on one's own server, as a pure function of recorded inventories.

The inventories are real `nvidia-smi --query-gpu=index,name,memory.total
--format=csv` outputs (tests/data/gpus); no GPU is needed here.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from support.gateway import APPS, BUNDLE_KEY

from skyform.bundle import build_bundle
from skyform.machines import can_stand_in
from skyform.providers.base import CapacityUnavailable
from skyform.providers.gpus import Gpu, GpuLedger, capacity, parse_nvidia_smi_csv, place
from skyform.providers.local import LocalProvider
from skyform.runtime.gateway_metrics import GatewayMetrics
from skyform.runtime.gateway_scheduler import Scheduler
from skyform.runtime.queue_store import QueueStore

DATA = Path(__file__).resolve().parents[1] / "data" / "gpus"


def inventory(name: str) -> list[Gpu]:
    return parse_nvidia_smi_csv((DATA / f"{name}.csv").read_text())


def test_nvidia_smi_csv_is_parsed_with_models_the_catalog_knows() -> None:
    h100 = inventory("h100x8")
    assert [g.index for g in h100] == list(range(8))
    assert h100[0] == Gpu(0, "NVIDIA H100 80GB HBM3", 81559)
    assert {g.model for g in h100} == {"H100"}
    assert [g.model for g in inventory("mixed")] == ["A100", "H100", "B200"]
    assert inventory("h200x1")[0].model == "H200"
    assert inventory("rtx4090")[0].model == "RTX4090"
    noheader = parse_nvidia_smi_csv("3, NVIDIA B200, 183359 MiB\n\n")
    assert noheader == [Gpu(3, "NVIDIA B200", 183359)]


def test_each_runner_gets_its_own_gpus_until_the_host_is_full() -> None:
    gpus = inventory("h100x8")
    taken: list[int] = []
    seen = []
    while (p := place(["GPU-H100"], gpus, taken)) is not None:
        assert len(p.gpus) == 1 and not set(p.gpus) & set(taken)
        taken.extend(p.gpus)
        seen.append(p.cuda_visible_devices)
    assert seen == [str(i) for i in range(8)]  # eight runners, one GPU each, never shared
    assert place(["GPU-H100x8"], gpus, []) is not None
    assert place(["GPU-H100x8"], gpus, [3]) is None  # one GPU busy: an x8 runner must wait
    whole = place(["GPU-H100x8"], gpus)
    assert whole is not None and whole.cuda_visible_devices == "0,1,2,3,4,5,6,7"


def test_a_stand_in_only_where_the_catalog_says_it_is_at_least_as_capable() -> None:
    h200 = inventory("h200x1")
    p = place(["GPU-H100"], h200)
    assert p is not None and (p.model, p.wanted, p.substitute) == ("H200", "H100", True)
    assert place(["GPU-B200"], h200) is None  # an H200 is not a B200
    mixed = inventory("mixed")
    h100 = place(["GPU-H100"], mixed)
    assert h100 is not None and (h100.gpus, h100.substitute) == ((1,), False)  # the H100 first
    second = place(["GPU-H100"], mixed, taken=[1])
    assert second is not None and (second.gpus, second.model) == ((2,), "B200")
    assert place(["GPU-H100"], mixed, taken=[1, 2]) is None  # never the A100
    assert place(["GPU-H100"], inventory("rtx4090")) is None
    assert can_stand_in("B200", "H100") and not can_stand_in("H100", "B200")
    assert not can_stand_in("A100", "H100") and can_stand_in("H100", "H100")


def test_machine_types_are_tried_in_the_apps_order() -> None:
    mixed = inventory("mixed")
    p = place(["GPU-B200", "GPU-H100"], mixed)
    assert p is not None and (p.machine_type, p.gpus) == ("GPU-B200", (2,))
    later = place(["GPU-B200", "GPU-H100"], mixed, taken=[2])
    assert later is not None and (later.machine_type, later.gpus) == ("GPU-H100", (1,))
    assert place(["CPU"], mixed) is None  # a CPU runner gets no GPU


@pytest.mark.parametrize(
    ("host", "types", "runners", "says"),
    [
        ("h100x8", ["GPU-H100"], 8, "can hold 8 runner(s) of GPU-H100 (1 H100 each)"),
        ("h100x8", ["GPU-H100x8"], 1, "can hold 1 runner(s) of GPU-H100x8 (8 H100 each)"),
        ("h200x1", ["GPU-H100"], 1, "H200 stands in for H100 (at least as capable"),
        ("mixed", ["GPU-H100"], 2, "can hold 2 runner(s) of GPU-H100 (1 H100 each)"),
        ("rtx4090", ["GPU-H100"], 0, "cannot hold one runner (it would wait for GPUs)"),
        ("h200x1", ["GPU-B200x8"], 0, "cannot hold one runner"),
    ],
)
def test_capacity_says_how_many_runners_fit(
    host: str, types: list[str], runners: int, says: str
) -> None:
    cap = capacity(types, inventory(host))
    assert cap.runners == runners
    assert says in cap.describe("embed")


# --- the local provider and the scheduler, on a recorded one-GPU host -------------------


class OneH200Provider(LocalProvider):
    """The local provider on a host whose inventory is the recorded single H200."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._gpus = GpuLedger(inventory("h200x1"))


@pytest.mark.slow
def test_a_second_gpu_runner_waits_for_the_gpu_and_nothing_fails(tmp_path: Path) -> None:
    """Real runners; only the inventory is recorded (this host has no GPU)."""
    bundle = build_bundle(str(APPS / "gw_gpu.py") + "::OneGpu", APPS, BUNDLE_KEY)
    provider = OneH200Provider("t", tmp_path)

    async def scenario() -> None:
        store = QueueStore(tmp_path / "queue.sqlite3")
        scheduler = Scheduler(
            store=store,
            provider=provider,
            metrics=GatewayMetrics(),
            stack="t",
            state_dir=tmp_path,
            bundle_key=BUNDLE_KEY,
        )
        await scheduler.start()
        try:
            app = scheduler.register("gpu", bundle.data, bundle.meta, "public", {})
            reqs = [
                scheduler.submit(
                    app, "/", "POST", body, "application/json", no_retry=False, persist=True
                )
                for body in (b'{"seconds": 2}', b'{"seconds": 0}')
            ]
            waiting: set[str] = set()
            async with asyncio.timeout(120):
                while not all(r.done.is_set() for r in reqs):
                    if app.waiting:
                        waiting.add(app.waiting)
                        assert app.describe()["waiting"] == app.waiting
                    assert len(provider.gpu_ledger().held()) <= 1, "one GPU, one runner"
                    await asyncio.sleep(0.02)
            assert waiting == {
                "waiting for a GPU: GPU-H100 needs 1 H100; 1 of this host's 1 GPUs are in "
                "use by other runners"
            }
            answers = [json.loads(r.result_body or b"{}") for r in reqs]
            assert [r.result_status for r in reqs] == [200, 200], answers
            assert [a["cuda_visible_devices"] for a in answers] == ["0", "0"]
            assert answers[0]["pid"] == answers[1]["pid"], "the waiting runner never ran"
            assert app.failures == 0 and app.last_error is None
            assert {r.state for r in app.runners.values()} == {"ready"}
        finally:
            await scheduler.close()
            store.close()
        assert provider.gpu_ledger().held() == {}  # stopped runners hold no GPU

    asyncio.run(scenario())


def test_a_cpu_runner_on_a_gpu_host_sees_no_gpu_and_a_gpu_less_host_is_untouched() -> None:
    ledger = GpuLedger(inventory("h100x8"))
    assert ledger.claim("cpu-1", ["CPU"], lambda _r: True) == {"CUDA_VISIBLE_DEVICES": ""}
    first = ledger.claim("a", ["GPU-H100"], lambda _r: True)
    assert first == {"CUDA_DEVICE_ORDER": "PCI_BUS_ID", "CUDA_VISIBLE_DEVICES": "0"}
    with pytest.raises(CapacityUnavailable, match="1 of this host's 8 GPUs are in use"):
        ledger.claim("b", ["GPU-H100x8"], lambda _r: True)
    assert ledger.held() == {"a": (0,)}  # a refused claim holds nothing
    # A runner that has exited gives its GPU back, even unstopped (a crash).
    whole = ledger.claim("c", ["GPU-H100x8"], lambda r: r != "a")
    assert whole["CUDA_VISIBLE_DEVICES"] == "0,1,2,3,4,5,6,7"
    assert ledger.claim("d", ["GPU-H100", "CPU"], lambda _r: True) == {"CUDA_VISIBLE_DEVICES": ""}
    ledger.release("c")
    assert ledger.held() == {}
    with pytest.raises(CapacityUnavailable, match="cannot hold it"):
        GpuLedger(inventory("rtx4090")).claim("e", ["GPU-H100"], lambda _r: True)
    assert GpuLedger([]).claim("f", ["GPU-H100"], lambda _r: True) == {}  # runs on CPU
