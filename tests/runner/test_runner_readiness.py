"""Readiness: /health while setup() runs, after it, and when it fails or overruns."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import httpx
import pytest
from support.runner import RunnerProcess, runner_env, running, wait_for_file

pytestmark = pytest.mark.slow


def _statuses_until_exit(runner: RunnerProcess, limit: float = 30) -> list[int]:
    """Every /health status seen (and one endpoint call per round) until the process ends."""
    seen: list[int] = []
    deadline = time.monotonic() + limit
    while runner.proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            seen.append(runner.health().status_code)
            seen.append(httpx.post(f"{runner.url}/", json={"x": 1}, timeout=5).status_code)
        time.sleep(0.02)
    return seen


def _health_once_setup_started(runner: RunnerProcess, tmp_path: Path) -> httpx.Response:
    """The runner's first `/health` answer after the probe's setup() has begun."""
    wait_for_file(tmp_path / "setup-started", runner)
    for _ in range(200):
        with contextlib.suppress(httpx.TransportError):
            return runner.health()
        time.sleep(0.05)
    raise AssertionError("the runner never answered /health while setup() ran")


def test_health_is_503_starting_during_setup_then_200_ready(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    env = runner_env(tmp_path, PROBE_SETUP="gate")
    with running(bundles["probe"], tmp_path, env=env) as runner:
        starting = _health_once_setup_started(runner, tmp_path)
        assert starting.status_code == 503
        assert starting.json() == {"status": "starting"}
        early = httpx.post(f"{runner.url}/", json={"x": 1}, timeout=5)
        assert early.status_code == 503
        assert early.json()["error_type"] == "runner_not_ready"
        assert runner.proc.poll() is None  # a call before ready does not end the runner

        (tmp_path / "setup-gate").write_text("go")
        runner.wait_ready()
        ready = runner.health().json()
        assert ready["status"] == "ready" and ready["app"] == "Probe" and ready["revision"]
        assert httpx.post(f"{runner.url}/", json={"x": 4}, timeout=5).json() == {"y": 8}


def test_health_wait_is_held_until_setup_ends(bundles: dict[str, Path], tmp_path: Path) -> None:
    """`GET /health?wait=S` answers when setup() ends, so a gateway need not poll fast."""
    env = runner_env(tmp_path, PROBE_SETUP="gate")
    with running(bundles["probe"], tmp_path, env=env) as runner:
        wait_for_file(tmp_path / "setup-started", runner)
        short = httpx.get(f"{runner.url}/health?wait=0.1", timeout=10)
        assert short.status_code == 503 and short.json() == {"status": "starting"}
        bad = httpx.get(f"{runner.url}/health?wait=soon", timeout=10)
        assert bad.status_code == 503  # not a number: answered at once, no error
        held: list[httpx.Response] = []
        waiter = threading.Thread(
            target=lambda: held.append(httpx.get(f"{runner.url}/health?wait=10", timeout=30))
        )
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive() and not held, "held while setup() runs"
        (tmp_path / "setup-gate").write_text("go")
        waiter.join(30)
        assert [r.status_code for r in held] == [200]
        assert held[0].json()["status"] == "ready"


def test_without_setup_ready_as_soon_as_up(bundles: dict[str, Path], tmp_path: Path) -> None:
    with running(bundles["nosetup"], tmp_path) as runner:
        runner.wait_ready()
        assert runner.health().json()["app"] == "NoSetup"
        assert httpx.post(f"{runner.url}/", timeout=5).json() == {"hello": "world"}
        assert "running setup()" not in runner.log()


def test_app_name_comes_from_the_environment(bundles: dict[str, Path], tmp_path: Path) -> None:
    env = runner_env(tmp_path, SKYFORM_APP_NAME="hello-app")
    with running(bundles["nosetup"], tmp_path, env=env) as runner:
        runner.wait_ready()
        assert runner.health().json()["app"] == "hello-app"


def test_setup_raising_exits_nonzero_with_traceback_never_ready(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    env = runner_env(tmp_path, PROBE_SETUP="raise")
    with running(bundles["probe"], tmp_path, env=env) as runner:
        seen = _statuses_until_exit(runner)
        code = runner.wait_exit()
        log = runner.log()
    assert code == 2
    assert 200 not in seen
    assert "Traceback (most recent call last)" in log
    assert "ValueError: setup exploded on purpose" in log
    assert "in setup" in log


def test_setup_past_startup_timeout_exits_nonzero_never_ready(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    env = runner_env(tmp_path, PROBE_SETUP="gate")  # the gate never opens
    with running(bundles["short-startup"], tmp_path, env=env) as runner:
        seen = _statuses_until_exit(runner)
        code = runner.wait_exit()
        log = runner.log()
    assert code == 2
    assert 200 not in seen
    assert "startup_timeout (1s)" in log


def test_a_plain_setup_starts_before_the_server_is_built(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    """The app's imports overlap the runner's own start; readiness still waits for setup()."""
    env = runner_env(tmp_path, PROBE_SETUP="gate")
    with running(bundles["probe"], tmp_path, env=env) as runner:
        starting = _health_once_setup_started(runner, tmp_path)
        assert starting.status_code == 503
        log = runner.log()
        assert log.index("running setup()") < log.index("serving Probe"), log
        (tmp_path / "setup-gate").write_text("go")
        runner.wait_ready()
        assert "setup() finished" in runner.log()
