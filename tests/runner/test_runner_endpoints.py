"""Endpoints served by one real runner process: calls, validation, errors, ids, metrics."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.runner import KEY, RunnerProcess, running

from skyform.bundle import read_bundle_file, read_bundle_meta
from skyform.runtime.runner_context import REQUEST_ID_HEADER

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runner(
    bundles: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunnerProcess]:
    with running(bundles["probe"], tmp_path_factory.mktemp("probe")) as proc:
        proc.wait_ready()
        yield proc


@pytest.fixture
def client(runner: RunnerProcess) -> Iterator[httpx.Client]:
    with runner.client() as c:
        yield c


def test_sync_and_async_endpoints_validate_input_and_serialise_output(client: httpx.Client) -> None:
    assert client.post("/", json={"x": 21}).json() == {"y": 42}
    assert client.post("/async", json={"x": 5}).json() == {"y": 10}
    info = client.post("/info")
    assert info.status_code == 200 and isinstance(info.json()["pid"], int)


def test_invalid_input_is_422_with_pydantic_details(client: httpx.Client) -> None:
    missing = client.post("/", json={})
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "x"]
    assert missing.json()["detail"][0]["type"] == "missing"
    wrong = client.post("/async", json={"x": "not a number"})
    assert wrong.status_code == 422
    assert wrong.json()["detail"][0]["type"] == "int_parsing"


def test_uncaught_exception_is_500_with_request_id_and_logged(
    runner: RunnerProcess, client: httpx.Client
) -> None:
    response = client.post("/boom", headers={REQUEST_ID_HEADER: "req-boom-1"})
    assert response.status_code == 500
    body = response.json()
    assert body["request_id"] == "req-boom-1" == response.headers[REQUEST_ID_HEADER]
    assert body["error_type"] == "internal_error"
    log = runner.log()
    assert "[req-boom-1]" in log and "ValueError: boom on purpose" in log
    assert client.post("/", json={"x": 1}).status_code == 200


def test_http_exception_codes_pass_through(client: httpx.Client) -> None:
    teapot = client.post("/status", json={"code": 418})
    assert teapot.status_code == 418
    assert teapot.json() == {"detail": "asked for 418"}


@pytest.mark.parametrize("route", ["/status", "/return-status"])
@pytest.mark.parametrize("code", [504, 500, 502])
def test_504_and_other_5xx_keep_the_runner_serving(
    runner: RunnerProcess, client: httpx.Client, route: str, code: int
) -> None:
    pid = client.post("/info").json()["pid"]
    assert client.post(route, json={"code": code}).status_code == code
    assert client.post("/", json={"x": 2}).json() == {"y": 4}
    assert client.post("/info").json()["pid"] == pid
    assert runner.proc.poll() is None


def test_non_cuda_runtime_error_is_500_and_runner_stays(
    runner: RunnerProcess, client: httpx.Client
) -> None:
    assert client.post("/runtime-error").status_code == 500
    assert client.post("/", json={"x": 3}).status_code == 200
    assert runner.proc.poll() is None


def test_output_not_matching_its_model_is_json_500(client: httpx.Client) -> None:
    response = client.post("/bad-output", headers={REQUEST_ID_HEADER: "req-out"})
    assert response.status_code == 500
    assert response.json()["error_type"] == "invalid_output"
    assert response.json()["request_id"] == "req-out"


def test_sync_handlers_do_not_block_the_event_loop(runner: RunnerProcess) -> None:
    result: dict[str, object] = {}

    def call_wait() -> None:
        with runner.client() as c:
            result["wait"] = c.post("/wait").json()

    waiter = threading.Thread(target=call_wait)
    waiter.start()
    try:
        with runner.client(timeout=10) as c:
            # These async calls are answered while the sync /wait holds its thread.
            for _ in range(500):
                if c.post("/waiting").json()["waiting"]:
                    break
            else:
                pytest.fail("/wait never started")
            assert runner.health().status_code == 200
            assert c.post("/release").json() == {"ok": True}
    finally:
        with contextlib.suppress(httpx.HTTPError), runner.client() as c:
            c.post("/release")
        waiter.join(40)
    assert result["wait"] == {"released": True}


def test_request_id_is_echoed_or_generated_and_in_log_lines(
    runner: RunnerProcess, client: httpx.Client
) -> None:
    given = client.post("/log", headers={REQUEST_ID_HEADER: "trace-abc.123"})
    assert given.headers[REQUEST_ID_HEADER] == "trace-abc.123"
    assert re.search(r"\[trace-abc\.123\] hello from a sync handler", runner.log())
    generated = client.post("/", json={"x": 1}).headers[REQUEST_ID_HEADER]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    bad = client.post("/", json={"x": 1}, headers={REQUEST_ID_HEADER: "has space"})
    assert bad.headers[REQUEST_ID_HEADER] != "has space"


def test_torch_is_not_imported_by_the_runner(client: httpx.Client) -> None:
    assert client.post("/info").json()["torch_loaded"] is False


def test_openapi_is_the_one_stored_in_the_bundle(
    bundles: dict[str, Path], client: httpx.Client
) -> None:
    meta = read_bundle_meta(read_bundle_file(bundles["probe"]), KEY)
    served = client.get("/openapi.json")
    assert served.status_code == 200
    assert served.json() == meta["openapi"]
    assert "/async" in served.json()["paths"]


def test_health_reports_app_and_revision(bundles: dict[str, Path], runner: RunnerProcess) -> None:
    meta = read_bundle_meta(read_bundle_file(bundles["probe"]), KEY)
    health = runner.health()
    assert health.status_code == 200
    assert health.json() == {"status": "ready", "app": "Probe", "revision": meta["revision"]}


def test_metrics_in_prometheus_text(client: httpx.Client) -> None:
    client.post("/", json={"x": 1})
    client.post("/", json={})
    client.post("/nowhere")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    ok = re.search(r'skyform_runner_requests_total\{endpoint="/",status="200"\} (\d+)', text)
    assert ok and int(ok.group(1)) >= 1
    assert re.search(r'skyform_runner_requests_total\{endpoint="/",status="422"\} [1-9]', text)
    assert re.search(r'skyform_runner_requests_total\{endpoint="other",status="404"\} [1-9]', text)
    assert re.search(
        r'skyform_runner_request_duration_seconds_bucket\{endpoint="/",le="\+Inf"\} [1-9]', text
    )
    assert re.search(r'skyform_runner_request_duration_seconds_count\{endpoint="/"\} [1-9]', text)
    assert re.search(r"^skyform_runner_ready 1$", text, re.M)
    assert "# TYPE skyform_runner_request_duration_seconds histogram" in text
