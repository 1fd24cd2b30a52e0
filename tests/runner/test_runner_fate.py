"""The status rules against real processes: 503 ends the runner, a timeout too."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from support.runner import RunnerProcess, running

from skyform.runtime.runner_context import REQUEST_ID_HEADER

pytestmark = pytest.mark.slow

# The runner must be gone this soon after answering its 503.
EXIT_BOUND_S = 2.0


def _call_then_expect_exit(
    runner: RunnerProcess, path: str, body: dict | None = None
) -> httpx.Response:
    # A keep-alive client stays connected: the runner must not wait for it.
    with runner.client() as client:
        response = client.post(path, json=body, headers={REQUEST_ID_HEADER: "fatal-1"})
        code = runner.wait_exit(EXIT_BOUND_S)
    assert code == 3, runner.log()
    assert "[fatal-1]" in runner.log() or "request fatal-1" in runner.log()
    return response


@pytest.mark.parametrize("path", ["/status", "/return-status"])
def test_503_is_answered_then_the_runner_exits(
    bundles: dict[str, Path], tmp_path: Path, path: str
) -> None:
    with running(bundles["probe"], tmp_path) as runner:
        runner.wait_ready()
        response = _call_then_expect_exit(runner, path, {"code": 503})
    assert response.status_code == 503
    assert response.headers[REQUEST_ID_HEADER] == "fatal-1"


def test_cuda_runtime_error_becomes_503_and_ends_the_runner(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    with running(bundles["probe"], tmp_path) as runner:
        runner.wait_ready()
        response = _call_then_expect_exit(runner, "/cuda-error")
    assert response.status_code == 503
    assert response.json()["error_type"] == "cuda_error"
    assert "illegal memory access" in response.json()["detail"]


def test_torch_out_of_memory_becomes_503_and_ends_the_runner(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    with running(bundles["probe"], tmp_path) as runner:
        runner.wait_ready()
        response = _call_then_expect_exit(runner, "/torch-oom")
    assert response.status_code == 503
    assert response.json()["error_type"] == "cuda_error"


@pytest.mark.parametrize("path", ["/slow", "/hang"])  # a sync and an async handler that never end
def test_request_past_request_timeout_is_504_then_the_runner_exits(
    bundles: dict[str, Path], tmp_path: Path, path: str
) -> None:
    with running(bundles["short-request"], tmp_path) as runner:
        runner.wait_ready()
        with runner.client() as client:
            response = client.post(path)
            code = runner.wait_exit(EXIT_BOUND_S)
        log = runner.log()
    assert response.status_code == 504
    assert response.json()["error_type"] == "request_timeout"
    assert code == 4, log
    assert "request_timeout (1s)" in log
