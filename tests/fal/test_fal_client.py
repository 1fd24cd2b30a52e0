"""The real fal-client, unmodified, against a TLS gateway: sync and async, by id, errors, timeouts.

Each suite runs once per module in its own process (fal_driver.py), configured
only by FAL_RUN_HOST, FAL_QUEUE_RUN_HOST, FAL_KEY and SSL_CERT_FILE; the
tests below check what it saw. App ids are fal's `owner/alias`: `<stack>/<app>`.
"""

from __future__ import annotations

from typing import Any

import pytest
from support.fal import STACK, TLSGateway, run_fal

pytestmark = pytest.mark.slow

APP_ID = f"{STACK}/echo"


@pytest.fixture(scope="module")
def sync_run(fal_gateway: TLSGateway) -> dict[str, Any]:
    return run_fal(fal_gateway, "sync", APP_ID)


@pytest.fixture(scope="module")
def async_run(fal_gateway: TLSGateway) -> dict[str, Any]:
    return run_fal(fal_gateway, "async", APP_ID)


def _messages(status: dict[str, Any]) -> list[str]:
    return [line["message"] for line in status["logs"]]


def test_run_and_submit_get(sync_run: dict[str, Any], fal_gateway: TLSGateway) -> None:
    assert sync_run["run"]["text"] == "HI"
    assert sync_run["get"]["text"] == "QUEUED"
    # The URLs handed back keep the stack-qualified id, over https.
    status_url = sync_run["submit"]["status_url"]
    assert status_url == (
        f"{fal_gateway.url}/queue/{APP_ID}/requests/{sync_run['submit']['request_id']}/status"
    )


def test_status_and_result_by_id(sync_run: dict[str, Any]) -> None:
    done = sync_run["status_by_id"]
    assert done["type"] == "Completed" and done["error"] is None
    assert done["metrics"]["inference_time"] >= 0
    # With logs: that request's own lines, printed and logged, with level and time.
    assert _messages(done) == ["printing queued", "logging queued"]
    printed, logged = done["logs"]
    assert printed["level"] == "INFO" and printed["source"] == "stdout"
    assert logged["level"] == "WARN" and logged["timestamp"].endswith("Z")
    assert sync_run["status_with_logs"]["logs"] == done["logs"]
    assert sync_run["status_by_id_no_logs"]["logs"] == []
    assert sync_run["result_by_id"]["text"] == "QUEUED"


def test_subscribe_reports_queue_updates_with_logs(sync_run: dict[str, Any]) -> None:
    assert sync_run["subscribe"]["text"] == "SUB"
    kinds = [u["type"] for u in sync_run["updates"]]
    assert "InProgress" in kinds and kinds[-1] == "Completed"
    assert set(kinds) <= {"Queued", "InProgress", "Completed"}
    assert _messages(sync_run["updates"][-1]) == ["printing sub", "logging sub"]
    in_progress = [u for u in sync_run["updates"] if u["type"] == "InProgress"]
    assert any(_messages(u) == ["printing sub", "logging sub"] for u in in_progress)


def test_iter_events_ends_with_completed(sync_run: dict[str, Any]) -> None:
    events = sync_run["events"]
    assert events[-1]["type"] == "Completed"
    assert all(e["type"] != "Completed" for e in events[:-1])
    assert _messages(events[-1]) == ["printing events", "logging events"]


def test_validation_error_maps_to_fal_client_http_error(sync_run: dict[str, Any]) -> None:
    error = sync_run["validation_error"]
    assert error["status"] == 422 and error["error_type"] == "validation_error"
    assert "prompt" in error["message"]


def test_cancel_by_id(sync_run: dict[str, Any]) -> None:
    cancelled = sync_run["cancelled"]
    assert cancelled["type"] == "Completed" and cancelled["error_type"] == "cancelled"


def test_start_timeout_bounds_the_wait_before_processing(sync_run: dict[str, Any]) -> None:
    for key in ("start_timeout_run", "start_timeout_subscribe"):
        error = sync_run[key]
        assert error["status"] == 504, key
        assert error["error_type"] == "request_timeout", key
        assert "X-Fal-Request-Timeout" in error["message"], key
    # The request that held the runner was not disturbed.
    assert sync_run["busy"]["text"] == "BUSY"


def test_async_client_equivalents(async_run: dict[str, Any]) -> None:
    assert async_run["run"]["text"] == "ASYNC"
    assert async_run["get"]["text"] == "ASYNC QUEUED"
    assert async_run["result_by_id"]["text"] == "ASYNC QUEUED"
    assert _messages(async_run["status_by_id"]) == ["printing async queued", "logging async queued"]
    assert async_run["subscribe"]["text"] == "ASYNC SUB"
    assert async_run["updates"][-1]["type"] == "Completed"
    assert _messages(async_run["updates"][-1]) == ["printing async sub", "logging async sub"]
    assert async_run["events"][-1]["type"] == "Completed"
    assert async_run["validation_error"]["status"] == 422
    assert async_run["cancelled"]["error_type"] == "cancelled"
    timeout = async_run["start_timeout_run"]
    assert timeout["status"] == 504 and timeout["error_type"] == "request_timeout"
    assert async_run["busy"]["text"] == "BUSY"


def test_wrong_key_is_refused(fal_gateway: TLSGateway) -> None:
    """fal-client sends `Authorization: Key <key>`; a wrong key is a 401, the right one works."""
    ok = fal_gateway.http.post(
        f"/{APP_ID}", json={"prompt": "k"}, headers={"Authorization": "Key gateway-test-api-key"}
    )
    assert ok.status_code == 200 and ok.json()["text"] == "K"
    wrong = fal_gateway.http.post(
        f"/{APP_ID}", json={"prompt": "k"}, headers={"Authorization": "Key nope"}
    )
    assert wrong.status_code == 401 and wrong.json()["error_type"] == "unauthorized"
