"""On a machine with CUDA GPUs: the real inventory, and a claimed GPU is the only one seen.

Skipped without CUDA (`pytest tests/gpu` on a GPU machine). The placement
logic itself is tested everywhere against recorded inventories
(tests/gateway/test_gpu_placement.py).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from skyform.providers.gpus import GpuLedger, capacity, inventory  # noqa: E402


def test_the_host_inventory_lists_every_gpu_cuda_sees() -> None:
    gpus = inventory()
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:  # the inventory is the host's; CUDA may be told to see fewer
        assert len(gpus) == torch.cuda.device_count()
    assert all(g.memory_mib > 0 and g.name for g in gpus)
    assert capacity(["GPU-H100"], gpus).runners in (0, len(gpus))


def test_a_runner_given_one_gpu_sees_exactly_one() -> None:
    ledger = GpuLedger()
    if capacity(["GPU-H100"], ledger.gpus).runners == 0:
        pytest.skip(f"no H100-class GPU here: {[g.name for g in ledger.gpus]}")
    env = {**os.environ, **ledger.claim("r1", ["GPU-H100"], lambda _r: True)}
    probe = "import torch; print(torch.cuda.device_count(), torch.cuda.get_device_name(0))"
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    count, name = out.stdout.split(" ", 1)
    assert count == "1"
    given = int(env["CUDA_VISIBLE_DEVICES"])
    assert name.strip() == next(g.name for g in ledger.gpus if g.index == given)
