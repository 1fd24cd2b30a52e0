"""Helpers for the runner tests: bundles of the probe apps and real runner processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from skyform.bundle import build_bundle
from support.procs import free_port

APPS_DIR = Path(__file__).resolve().parents[1] / "runner" / "runner_apps"
KEY = "runner-test-key"


def make_bundle(out: Path, cls: str = "Probe", overrides: dict[str, Any] | None = None) -> Path:
    """Bundle `runner_apps/probe_app.py::<cls>` signed with KEY into `out`."""
    return build_bundle(f"probe_app.py::{cls}", APPS_DIR, KEY, overrides).write(out)


@dataclass
class RunnerProcess:
    """A `python -m skyform.runtime.runner` process and where its output goes."""

    proc: subprocess.Popen[bytes]
    port: int
    log_path: Path
    probe_dir: Path
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, **kwargs: Any) -> httpx.Client:
        kwargs.setdefault("timeout", 20)
        return httpx.Client(base_url=self.url, headers=self.headers, **kwargs)

    def health(self) -> httpx.Response:
        return httpx.get(f"{self.url}/health", timeout=5)

    def wait_ready(self, limit: float = 60) -> None:
        """Poll /health until 200; fail with the runner's log if it exits or never gets there."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"runner exited {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.TransportError):
                if self.health().status_code == 200:
                    return
            time.sleep(0.05)
        raise AssertionError(f"runner not ready after {limit}s:\n{self.log()}")

    def wait_exit(self, limit: float = 30) -> int:
        try:
            return self.proc.wait(limit)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"runner still running after {limit}s:\n{self.log()}") from None

    def accepts_connections(self) -> bool:
        with socket.socket() as sock:
            sock.settimeout(2)
            try:
                sock.connect(("127.0.0.1", self.port))
            except OSError:
                return False
            return True

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


def runner_env(probe_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKYFORM_", "PROBE_"))}
    env.update({"SKYFORM_BUNDLE_KEY": KEY, "PROBE_DIR": str(probe_dir)})
    env.update(extra)
    return env


@contextlib.contextmanager
def running(
    bundle: Path,
    probe_dir: Path,
    *,
    env: dict[str, str] | None = None,
    args: tuple[str, ...] = (),
    token: str | None = None,
) -> Iterator[RunnerProcess]:
    """Start a runner on a free port; it is killed on the way out whatever happened."""
    probe_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log_path = probe_dir / f"runner-{port}.log"
    full_env = env if env is not None else runner_env(probe_dir)
    if token:
        full_env = {**full_env, "SKYFORM_RUNNER_TOKEN": token}
    command = [sys.executable, "-m", "skyform.runtime.runner", "--bundle", str(bundle)]
    command += ["--port", str(port), *args]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    runner = RunnerProcess(proc, port, log_path, probe_dir)
    if token:
        runner.headers = {"Authorization": f"Bearer {token}"}
    try:
        yield runner
    finally:
        runner.stop()


def wait_for_file(path: Path, runner: RunnerProcess, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        if runner.proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{path.name} never appeared:\n{runner.log()}")
        time.sleep(0.02)
