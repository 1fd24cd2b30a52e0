"""The provider against a real local SkyPilot API server, in a loopback-only
network namespace (nothing can reach a cloud, so nothing can be provisioned or billed)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.skypilot import SKY_ENV, make_sky_home

pytestmark = [pytest.mark.skypilot, pytest.mark.slow]

DRIVER = Path(__file__).with_name("skypilot_api_server_driver.py")


def processes_with_home(home: Path) -> list[int]:
    """Processes whose environment has HOME=home: the API server this test started."""
    marker = f"HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture
def offline_home(tmp_path: Path):
    home = make_sky_home(tmp_path / "home")
    try:
        yield home
    finally:
        for pid in processes_with_home(home):  # only ours: they carry this private HOME
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_launch_status_down_through_a_real_api_server(offline_home: Path, tmp_path: Path):
    if os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("this test needs root with `unshare` and `ip` (a loopback-only namespace)")
    if shutil.which("rsync") is None:
        pytest.fail("SkyPilot needs rsync to launch; install it (scripts/system-deps.sh)")
    out = tmp_path / "found.json"
    work = tmp_path / "work"
    work.mkdir()
    scratch = tmp_path / "tmp"  # SkyPilot's request workers leave temp folders behind
    scratch.mkdir()
    env = {**os.environ, **SKY_ENV, "HOME": str(offline_home), "TMPDIR": str(scratch)}
    env.pop("SKYPILOT_API_SERVER_ENDPOINT", None)
    command = f"ip link set lo up && exec {sys.executable} {DRIVER} {out} {work}"
    result = subprocess.run(
        ["unshare", "-n", "sh", "-c", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    found = json.loads(out.read_text())
    assert "error" not in found, found.get("error")

    endpoint, local = found["api_server"]
    assert endpoint.startswith("http://127.0.0.1:") and local
    # Dry runs go through the server's optimizer and validation, and launch nothing.
    assert found["dryrun_runner"] == {"cluster": "sf-demo--embed--a1b2c3d4--r1", "url": ""}
    assert found["dryrun_gateway"] == {"cluster": "sf-demo--gateway"}
    assert found["local_server_gateway"]["kind"] == "api_server"
    # A real launch fails where Lambda would answer; SkyPilot's reason comes through,
    # and nothing is left behind.
    failure = found["launch_failure"]
    assert failure["kind"] == "cloud_error" and failure["leftover"] is None
    assert "cloud.lambdalabs.com" in failure["reason"]
    assert found["runners_after_failure"] == []
    assert found["status_after_failure"] == []
    assert found["down_absent"] == "ok"
    assert found["disabled_cloud"]["kind"] == "cloud_not_enabled"
    assert processes_with_home(offline_home) == []  # the API server stopped
