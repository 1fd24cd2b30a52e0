"""SIGTERM / SIGINT: stop accepting, finish requests in flight (bounded), teardown(), exit 0."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from support.runner import RunnerProcess, running, wait_for_file

pytestmark = pytest.mark.slow


def _start_slow_call(runner: RunnerProcess, result: dict[str, object]) -> threading.Thread:
    def call() -> None:
        try:
            with runner.client(timeout=60) as client:
                response = client.post("/slow")
                result["status"] = response.status_code
                result["body"] = response.text
        except httpx.HTTPError as exc:
            result["error"] = exc

    thread = threading.Thread(target=call)
    thread.start()
    return thread


def _wait_not_accepting(runner: RunnerProcess, limit: float = 20) -> None:
    deadline = time.monotonic() + limit
    while runner.accepts_connections():
        assert time.monotonic() < deadline, "runner still accepts connections after SIGTERM"
        time.sleep(0.05)


def test_sigterm_drains_in_flight_request_then_teardown_and_exit_0(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    with running(bundles["probe"], tmp_path) as runner:
        runner.wait_ready()
        result: dict[str, object] = {}
        thread = _start_slow_call(runner, result)
        try:
            wait_for_file(tmp_path / "slow-started", runner)
            runner.proc.send_signal(signal.SIGTERM)
            _wait_not_accepting(runner)
            # Still draining: the request in flight holds the runner open.
            assert runner.proc.poll() is None
            assert not (tmp_path / "teardown-mark").exists()
        finally:
            (tmp_path / "slow-gate").write_text("go")
            thread.join(60)
        code = runner.wait_exit()
        log = runner.log()
    assert result.get("status") == 200, result
    assert result["body"] == '{"finished":true}'
    assert code == 0, log
    assert (tmp_path / "teardown-mark").read_text() == "teardown ran"
    assert "draining" in log


def test_grace_bounds_the_drain(bundles: dict[str, Path], tmp_path: Path) -> None:
    with running(bundles["probe"], tmp_path, args=("--grace", "0.5")) as runner:
        runner.wait_ready()
        result: dict[str, object] = {}
        thread = _start_slow_call(runner, result)  # its gate never opens
        try:
            wait_for_file(tmp_path / "slow-started", runner)
            runner.proc.send_signal(signal.SIGTERM)
            code = runner.wait_exit()
        finally:
            thread.join(60)
    assert code == 0
    assert (tmp_path / "teardown-mark").read_text() == "teardown ran"
    # The cut-off request is told to go elsewhere, not given a bare 500.
    assert result.get("status") == 503, result
    assert '"runner_shutdown"' in str(result["body"])


def test_sigint_on_an_idle_runner_runs_teardown(bundles: dict[str, Path], tmp_path: Path) -> None:
    with running(bundles["probe"], tmp_path) as runner:
        runner.wait_ready()
        runner.proc.send_signal(signal.SIGINT)
        code = runner.wait_exit()
    assert code == 0
    assert (tmp_path / "teardown-mark").exists()


def test_sigterm_during_setup_exits_0_without_teardown(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    from support.runner import runner_env

    env = runner_env(tmp_path, PROBE_SETUP="gate")
    with running(bundles["probe"], tmp_path, env=env) as runner:
        wait_for_file(tmp_path / "setup-started", runner)
        runner.proc.send_signal(signal.SIGTERM)
        code = runner.wait_exit()
    assert code == 0
    assert not (tmp_path / "teardown-mark").exists()
