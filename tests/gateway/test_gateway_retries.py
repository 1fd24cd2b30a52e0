"""Retries by status code, each against real runner processes (DESIGN §7)."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from support.gateway import GatewayProc
from support.procs import pid_alive
from support.waiting import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gw(shared_gateway: GatewayProc, bundles) -> GatewayProc:
    shared_gateway.register("echo", bundles["echo_public"])
    assert shared_gateway.http.post("/echo/", json={"text": "warm"}).status_code == 200
    return shared_gateway


def calls(gw: GatewayProc, key: str) -> list[int]:
    """The pids of the runners that ran the handler for `key`, one per run."""
    path = gw.count_dir / key
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_503_ends_that_runner_and_the_request_completes_on_a_new_one(gw: GatewayProc) -> None:
    response = gw.http.post("/echo/status", json={"key": "r503", "code": 503, "fail_times": 1})
    assert response.status_code == 200, response.text
    first, second = calls(gw, "r503")
    assert first != second and response.json()["pid"] == second
    wait_for(lambda: not pid_alive(first), 15, "the 503 runner to exit")


def test_504_is_retried_and_the_runner_kept(gw: GatewayProc) -> None:
    response = gw.http.post("/echo/status", json={"key": "r504", "code": 504, "fail_times": 2})
    assert response.status_code == 200, response.text
    pids = calls(gw, "r504")
    assert len(pids) == 3
    assert all(pid_alive(p) for p in pids)


def test_runner_killed_mid_request_is_retried(gw: GatewayProc) -> None:
    result: dict[str, object] = {}

    def call() -> None:
        r = gw.http.post("/echo/status", json={"key": "kill", "sleep": 2.0})
        result["status"], result["body"] = r.status_code, r.json()

    thread = threading.Thread(target=call)
    thread.start()
    try:
        victim = wait_for(lambda: calls(gw, "kill"), 20, "the handler to start")[0]
        os.kill(victim, signal.SIGKILL)
    finally:
        thread.join(60)
    assert result["status"] == 200, result
    pids = calls(gw, "kill")
    assert len(pids) == 2 and pids[1] != victim
    assert result["body"]["pid"] == pids[1]  # type: ignore[index]


@pytest.mark.parametrize("code", [400, 422, 500])
def test_client_and_app_errors_are_returned_as_they_are(gw: GatewayProc, code: int) -> None:
    key = f"r{code}"
    response = gw.http.post("/echo/status", json={"key": key, "code": code, "fail_times": 99})
    assert response.status_code == code
    assert f"planned {code}" in response.json()["detail"]
    assert len(calls(gw, key)) == 1
    # And through the queue: COMPLETED with the error, the result keeps the status.
    submitted = gw.submit("echo", "/status", {"key": key + "q", "code": code, "fail_times": 99})
    status = gw.wait_done(submitted)
    assert status["response_status"] == code and f"planned {code}" in status["error"]
    assert gw.http.get(submitted["response_url"]).status_code == code
    assert len(calls(gw, key + "q")) == 1


def test_invalid_input_is_422_without_running_the_handler(gw: GatewayProc) -> None:
    response = gw.http.post("/echo/status", json={"code": 200})
    assert response.status_code == 422
    assert not (gw.count_dir / "None").exists()


def test_no_retry_header_returns_the_first_answer(gw: GatewayProc) -> None:
    response = gw.http.post(
        "/echo/status",
        json={"key": "noretry", "code": 504, "fail_times": 5},
        headers={"x-skyform-no-retry": "1"},
    )
    assert response.status_code == 504
    assert len(calls(gw, "noretry")) == 1


def test_at_most_ten_attempts(gw: GatewayProc) -> None:
    submitted = gw.submit("echo", "/status", {"key": "always504", "code": 504, "fail_times": 99})
    status = gw.wait_done(submitted)
    assert status["status"] == "COMPLETED"
    assert status["error_type"] == "max_attempts_exceeded"
    assert "10 attempts" in status["error"] and status["attempts"] == 10
    assert len(calls(gw, "always504")) == 10
    result = gw.http.get(submitted["response_url"])
    assert result.json()["error_type"] == "max_attempts_exceeded"
    metrics = gw.admin("GET", "/-/metrics").text
    assert 'skyform_gateway_retries_total{app="echo",reason="504"}' in metrics


def test_request_timeout_fails_with_timeout(gw: GatewayProc, bundles, tmp_path: Path) -> None:
    gw.register("slowpoke", bundles["timeouts"])
    response = gw.http.post("/slowpoke/status", json={"key": "late", "sleep": 3})
    assert response.status_code == 504
    assert response.json()["error_type"] == "timeout"
    assert len(calls(gw, "late")) == 1
    gw.admin("DELETE", "/-/apps/slowpoke")


def test_a_wedged_runner_is_replaced(gw: GatewayProc, bundles) -> None:
    """A runner that cannot answer even past request_timeout is stuck: it gets no more work."""
    gw.register("stuck", bundles["timeouts"])
    response = gw.http.post("/stuck/wedge", json={"key": "wedged", "sleep": 15}, timeout=60)
    assert response.status_code == 504
    assert response.json()["error_type"] == "timeout"
    (wedged_pid,) = {int(pid) for pid in calls(gw, "wedged")}
    after = gw.http.post("/stuck/status", json={"key": "after"}, timeout=60)
    assert after.status_code == 200, after.text
    assert after.json()["pid"] != wedged_pid
    wait_for(lambda: not pid_alive(wedged_pid), timeout=20, what="the wedged runner to stop")
    gw.admin("DELETE", "/-/apps/stuck")
