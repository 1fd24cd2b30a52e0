"""CUDA failures on a real GPU: out-of-memory and device errors make the runner replace itself.

Runs only where torch sees a CUDA device (`pytest tests/gpu` on a GPU machine);
the CPU-only twin of these checks lives in the runner tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from support.procs import free_port

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

KEY = "gpu-test-key"
APP = """
import torch
from skyform import App, endpoint


class Cuda(App):
    machine_type = "GPU-H100"

    def setup(self) -> None:
        self.ones = torch.ones(4, device="cuda")

    @endpoint("/sum")
    def total(self) -> dict:
        return {"sum": float(self.ones.sum()), "device": torch.cuda.get_device_name()}

    @endpoint("/oom")
    def oom(self) -> dict:
        huge = torch.empty(1 << 47, dtype=torch.uint8, device="cuda")  # 128 TiB
        return {"n": huge.numel()}

    @endpoint("/device-assert")
    def device_assert(self) -> dict:
        index = torch.tensor([1000], device="cuda")
        return {"value": float(self.ones[index].sum().item())}
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from skyform.bundle import build_bundle

    project = tmp_path_factory.mktemp("cuda_app")
    (project / "cuda_app.py").write_text(textwrap.dedent(APP))
    return build_bundle("cuda_app.py::Cuda", project, KEY).write(project / "cuda.skyb")


def _start(bundle: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "SKYFORM_BUNDLE_KEY": KEY}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "skyform.runtime.runner",
                "--bundle",
                str(bundle),
                "--port",
                str(port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"runner not ready:\n{log.read_text()}")


@pytest.mark.parametrize("route", ["/oom", "/device-assert"])
def test_cuda_failure_answers_503_then_runner_exits(
    bundle: Path, tmp_path: Path, route: str
) -> None:
    log = tmp_path / "runner.log"
    proc, url = _start(bundle, log)
    try:
        ok = httpx.post(f"{url}/sum", timeout=60)
        assert ok.status_code == 200, ok.text
        assert ok.json()["sum"] == 4.0
        failed = httpx.post(f"{url}{route}", timeout=60)
        assert failed.status_code == 503, failed.text
        assert proc.wait(10) != 0
        print(route, failed.json(), ok.json()["device"])
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
