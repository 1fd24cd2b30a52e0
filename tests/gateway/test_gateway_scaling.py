"""Scaling: from zero, bursts within max_runners x max_multiplexing, keep_alive, min_runners,
setup failures with backoff and a bound."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from support.gateway import GatewayProc
from support.waiting import wait_for

pytestmark = pytest.mark.slow


def test_first_request_starts_a_runner_from_zero(gateway: GatewayProc, bundles) -> None:
    gateway.register("echo", bundles["echo_public"])
    assert gateway.app("echo")["runners"] == []  # min_runners 0: nothing starts at registration
    response = gateway.http.post("/echo/", json={"text": "hello"})
    assert response.status_code == 200 and response.json()["echo"] == "hello"
    assert len(gateway.runners("echo")) == 1


def test_burst_respects_max_runners_and_max_multiplexing(gateway: GatewayProc, bundles) -> None:
    gateway.register("burst", bundles["burst"])  # max_runners 3, max_multiplexing 2
    seen_runners: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            runners = gateway.app("burst")["runners"]
            seen_runners.append(
                sum(1 for r in runners if r["state"] in ("building", "starting", "ready"))
            )
            for r in runners:
                assert r["in_flight"] <= 2

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with (
            httpx.Client(base_url=gateway.url, timeout=120, trust_env=False) as client,
            ThreadPoolExecutor(50) as pool,
        ):
            responses = list(
                pool.map(
                    lambda i: client.post("/burst/busy", json={"key": f"b{i}", "sleep": 0.3}),
                    range(50),
                )
            )
    finally:
        stop.set()
        watcher.join()
    assert [r.status_code for r in responses] == [200] * 50
    bodies = [r.json() for r in responses]
    assert max(b["peak"] for b in bodies) <= 2  # never more than 2 at once on one runner
    assert len({b["pid"] for b in bodies}) <= 3
    assert max(seen_runners) <= 3
    assert len({b["pid"] for b in bodies}) >= 2  # and it did scale out


def test_keep_alive_stops_idle_runners_but_not_below_min(gateway: GatewayProc, bundles) -> None:
    gateway.register("warm", bundles["warm"])  # min_runners 1, max_runners 2, keep_alive 0.5
    wait_for(lambda: gateway.runners("warm"), 30, "the min_runners runner")
    with (
        httpx.Client(base_url=gateway.url, timeout=60, trust_env=False) as client,
        ThreadPoolExecutor(6) as pool,
    ):
        # Six calls held on the runners until a second runner is up: the queued
        # work scales the app out, however long that runner takes to start.
        body = {"key": "w", "release": "keep-alive-go"}
        calls = [pool.submit(client.post, "/warm/busy", json=body) for _ in range(6)]
        wait_for(
            lambda: sum(r["state"] == "ready" for r in gateway.app("warm")["runners"]) >= 2,
            60,
            "a second runner for the queued work",
        )
        (gateway.count_dir / body["release"]).touch()
        assert [c.result().status_code for c in calls] == [200] * 6
    # Back to exactly min_runners once idle, and it stays there.
    wait_for(lambda: len(gateway.runners("warm")) == 1, 20, "scale-down to min_runners")
    wait_for(
        lambda: any(r["state"] == "stopped" for r in gateway.app("warm")["runners"]),
        20,
        "a stopped runner in the list",
    )
    time.sleep(1.5)  # three keep_alive periods
    assert len(gateway.runners("warm")) == 1


def test_setup_failure_fails_waiting_requests_after_a_bound(gateway: GatewayProc, bundles) -> None:
    gateway.register("broken", bundles["broken"])
    submitted = gateway.submit("broken", "/", None)
    response = gateway.http.post("/broken/")
    assert response.status_code == 503
    body = response.json()
    assert body["error_type"] == "startup_failed"
    assert "model weights not found" in body["error"]
    status = gateway.wait_done(submitted)
    assert status["error_type"] == "startup_failed"
    app = gateway.app("broken")
    failed = [r for r in app["runners"] if r["state"] == "failed"]
    assert len(failed) >= 3  # replaced, with backoff, before giving up
    assert app["last_error"] and "model weights not found" in app["last_error"]
    logs = gateway.admin("GET", "/-/apps/broken/logs", params={"tail": 100}).text
    assert "model weights not found" in logs
