"""The gateway's routes: admin API, auth, queue submit/status/result/cancel, logs, metrics."""

from __future__ import annotations

import base64
import re

import pytest
from support.gateway import ADMIN, API_KEY, APPS, GatewayProc
from support.procs import pid_alive
from support.waiting import wait_for

from skyform.bundle import build_bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gw(shared_gateway: GatewayProc, bundles) -> GatewayProc:
    shared_gateway.register("echo", bundles["echo_public"], auth="public", env={"GREETING": "hi"})
    shared_gateway.register("secret", bundles["echo"], auth="private")
    return shared_gateway


def test_admin_api_needs_the_bearer_token(gw: GatewayProc) -> None:
    for method, path in [
        ("GET", "/-/health"),
        ("GET", "/-/apps"),
        ("GET", "/-/runners"),
        ("GET", "/-/metrics"),
        ("PUT", "/-/apps/x"),
        ("DELETE", "/-/apps/echo"),
        ("GET", "/-/apps/echo/logs"),
    ]:
        assert gw.http.request(method, path).status_code == 401, path
        wrong = {"Authorization": "Bearer nope"}
        assert gw.http.request(method, path, headers=wrong).status_code == 401, path
    health = gw.admin("GET", "/-/health").json()
    assert health["status"] == "ok" and health["stack"] == "test" and health["pid"] > 0
    assert "echo" in [a["name"] for a in gw.admin("GET", "/-/apps").json()["apps"]]


def test_register_returns_revision_and_fingerprint(gw: GatewayProc, bundles) -> None:
    bundle = bundles["echo_public"]
    body = gw.register("echo", bundle, auth="public", env={"GREETING": "hi"}).json()
    assert body == {"name": "echo", "revision": bundle.revision, "fingerprint": bundle.fingerprint}
    app = gw.app("echo")
    assert app["auth"] == "public" and app["options"]["max_runners"] == 2
    assert {"queue_depth", "runners", "last_error", "options"} <= set(app)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("not json", "must be JSON"),
        ({"bundle_b64": "!!!"}, "not valid base64"),
        ({"bundle_b64": base64.b64encode(b"hello").decode()}, "not a skyform bundle"),
        ({}, "bundle_b64"),
        ({"bundle_b64": "x", "oath": "public"}, 'did you mean "auth"'),
    ],
)
def test_register_refuses_bad_input(gw: GatewayProc, payload, message: str) -> None:
    kwargs = {"content": payload} if isinstance(payload, str) else {"json": payload}
    response = gw.admin("PUT", "/-/apps/newapp", **kwargs)
    assert response.status_code == 400
    assert message in response.json()["detail"]
    assert gw.admin("GET", "/-/apps/newapp").status_code == 404


def test_register_refuses_foreign_bundles_names_and_options(gw: GatewayProc, bundles) -> None:
    foreign = build_bundle(str(APPS / "gw_echo.py") + "::Echo", APPS, "another-stack-key")
    b64 = base64.b64encode(foreign.data).decode()
    response = gw.admin("PUT", "/-/apps/newapp", json={"bundle_b64": b64})
    assert response.status_code == 400 and "signature" in response.json()["detail"]
    good = base64.b64encode(bundles["echo"].data).decode()
    for name in ("Bad Name", "queue"):
        response = gw.admin("PUT", f"/-/apps/{name}", json={"bundle_b64": good})
        assert response.status_code in (400, 404), name
    response = gw.admin("PUT", "/-/apps/newapp", json={"bundle_b64": good, "auth": "open"})
    assert response.status_code == 400 and "auth" in response.json()["detail"]
    response = gw.admin("PUT", "/-/apps/newapp", json={"bundle_b64": good, "env": {"A": 1}})
    assert response.status_code == 400 and "env" in response.json()["detail"]
    assert gw.admin("GET", "/-/apps/newapp").status_code == 404


def test_private_app_needs_the_api_key(gw: GatewayProc) -> None:
    body = {"text": "x"}
    response = gw.http.post("/secret/", json=body)
    assert response.status_code == 401 and response.json()["error_type"] == "unauthorized"
    assert (
        gw.http.post("/secret/", json=body, headers={"Authorization": "Bearer no"}).status_code
        == 401
    )
    assert gw.http.post("/queue/secret/", json=body).status_code == 401
    # The admin token is not an API key.
    assert (
        gw.http.post(
            "/secret/", json=body, headers={"Authorization": f"Bearer {ADMIN}"}
        ).status_code
        == 401
    )
    ok = gw.http.post("/secret/", json=body, headers={"Authorization": f"Bearer {API_KEY}"})
    assert ok.status_code == 200 and ok.json()["echo"] == "x"
    fal_style = gw.http.post("/secret/", json=body, headers={"Authorization": f"Key {API_KEY}"})
    assert fal_style.status_code == 200
    public = gw.http.post("/echo/", json=body)
    assert public.status_code == 200 and public.json()["echo"] == "x"


def test_unknown_app_and_endpoint_are_404_with_a_hint(gw: GatewayProc) -> None:
    for path in ("/ecoh/", "/secre/", "/queue/ecoh/", "/ecoh/playground"):
        response = gw.http.request("GET" if "playground" in path else "POST", path, json={})
        assert response.status_code == 404, path
        detail = response.json()["detail"]
        # Only the name asked for: an anonymous caller learns no other app's name.
        assert detail == f"no app named {path.split('/')[-2]!r}", detail
        assert "secret" not in response.text and "echo" not in response.text
    response = gw.http.post("/echo/nope", json={})
    assert response.status_code == 404 and "/status" in response.json()["detail"]
    assert gw.http.get("/echo/").status_code == 405


def test_sync_call_passes_env_and_get_endpoints(gw: GatewayProc) -> None:
    response = gw.http.get("/echo/version")
    assert response.status_code == 200
    assert response.json()["greeting"] == "hi"
    assert response.headers["x-skyform-request-id"]


def test_queue_submit_status_result(gw: GatewayProc) -> None:
    submitted = gw.submit("echo", "/", {"text": "ab", "times": 3})
    assert set(submitted) == {"request_id", "status_url", "response_url", "cancel_url"}
    assert submitted["status_url"].startswith(gw.url + "/queue/echo/requests/")
    status = gw.wait_done(submitted)
    assert status["status"] == "COMPLETED" and "error" not in status
    result = gw.http.get(submitted["response_url"])
    assert result.status_code == 200 and result.json()["echo"] == "ababab"
    assert gw.http.get("/queue/echo/requests/unknown-id/status").status_code == 404
    # A request id of one app is not visible through another.
    other = gw.http.get(
        f"/queue/secret/requests/{submitted['request_id']}/status",
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert other.status_code == 404


def test_queue_position_and_cancel(gw: GatewayProc) -> None:
    # Occupy both runners of `echo` (max_runners 2, one slot each), then queue more.
    # The blockers hold their runners until the test lets them go: the second
    # runner may take as long as it likes to start.
    hold = {"release": "queue-position-go"}
    blockers = [gw.submit("echo", "/status", {"key": f"block{i}", **hold}) for i in range(2)]
    wait_for(
        lambda: all(
            gw.http.get(b["status_url"]).json()["status"] == "IN_PROGRESS" for b in blockers
        ),
        30,
        "both blockers to run",
    )
    queued = [gw.submit("echo", "/", {"text": str(i)}) for i in range(3)]
    positions = [gw.http.get(q["status_url"]).json() for q in queued]
    assert [p["status"] for p in positions] == ["IN_QUEUE"] * 3
    assert [p["queue_position"] for p in positions] == [0, 1, 2]
    cancel = gw.http.put(queued[1]["cancel_url"])
    assert cancel.status_code == 202
    assert gw.http.get(queued[2]["status_url"]).json()["queue_position"] == 1
    status = gw.http.get(queued[1]["status_url"]).json()
    assert status["status"] == "COMPLETED" and status["error_type"] == "cancelled"
    result = gw.http.get(queued[1]["response_url"])
    assert result.status_code == 409 and result.json()["error_type"] == "cancelled"
    (gw.count_dir / hold["release"]).touch()
    for q in (queued[0], queued[2], *blockers):
        assert "error" not in gw.wait_done(q)
    again = gw.http.put(queued[0]["cancel_url"])
    assert again.status_code == 400 and again.json()["status"] == "ALREADY_COMPLETED"


def test_logs_runners_and_metrics(gw: GatewayProc) -> None:
    assert gw.http.post("/echo/", json={"text": "log me"}).status_code == 200
    logs = gw.admin("GET", "/-/apps/echo/logs", params={"tail": 50})
    assert logs.status_code == 200 and logs.headers["content-type"].startswith("text/plain")
    assert re.search(r"^\S+Z echo-[0-9a-f]{8} INFO ", logs.text, re.M)
    runners = gw.admin("GET", "/-/runners").json()["runners"]
    ready = [r for r in runners if r["app"] == "echo" and r["state"] == "ready"]
    assert ready and ready[0]["url"].startswith("http://127.0.0.1:") and ready[0]["pid"] > 0
    metrics = gw.admin("GET", "/-/metrics")
    assert metrics.status_code == 200
    text = metrics.text
    assert 'skyform_gateway_queue_depth{app="echo"}' in text
    assert 'skyform_gateway_runners{app="echo",state="ready"}' in text
    assert 'skyform_gateway_requests_total{app="echo",outcome="success"}' in text
    assert 'skyform_gateway_queue_seconds_count{app="echo"}' in text
    assert "skyform_gateway_retries_total" in text


def test_delete_app(gw: GatewayProc, bundles) -> None:
    gw.register("gone", bundles["echo_public"])
    assert gw.http.post("/gone/", json={"text": "x"}).status_code == 200
    pids = [r["pid"] for r in gw.runners("gone")]
    assert pids
    assert gw.admin("DELETE", "/-/apps/gone").status_code == 200
    assert gw.admin("GET", "/-/apps/gone").status_code == 404
    assert gw.http.post("/gone/", json={"text": "x"}).status_code == 404
    missing = gw.admin("DELETE", "/-/apps/gone")
    assert missing.status_code == 404
    wait_for(lambda: not any(pid_alive(p) for p in pids), 20, "the app's runners to stop")
