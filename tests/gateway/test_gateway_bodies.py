"""Bad bodies are refused at the gateway, at once, and change nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.gateway import APPS, BUNDLE_KEY, GatewayProc

from skyform.bundle import build_bundle

pytestmark = pytest.mark.slow
REF = str(APPS / "gw_stream.py") + "::Streamer"


@pytest.fixture(scope="module")
def gw(shared_gateway: GatewayProc) -> Iterator[GatewayProc]:
    shared_gateway.register("bodies", build_bundle(REF, APPS, BUNDLE_KEY), auth="public")
    small = build_bundle(REF, APPS, BUNDLE_KEY, {"max_body_mb": 0.001})  # about 1 KiB
    shared_gateway.register("small", small, auth="public")
    yield shared_gateway


def _untouched(gw: GatewayProc, app: str) -> None:
    info = gw.app(app)
    assert info["runners"] == [] and info["queue_depth"] == 0 and info["in_progress"] == 0


def test_an_invalid_queue_body_is_422_at_submit(gw: GatewayProc) -> None:
    response = gw.http.post("/queue/bodies/tokens", json={"n": "many"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert {"loc": ["body"], "msg": "'key' is a required property", "type": "required"} in detail
    assert any(d["loc"] == ["body", "n"] and d["type"] == "type" for d in detail)
    assert response.json()["error_type"] == "validation_error"
    _untouched(gw, "bodies")
    nested = gw.http.post("/queue/bodies/items/3", json={"name": ["not", "a", "string"]})
    assert nested.status_code == 422 and nested.json()["detail"][0]["loc"] == ["body", "name"]
    _untouched(gw, "bodies")


def test_a_body_over_the_apps_limit_is_413(gw: GatewayProc) -> None:
    big = {"key": "x" * 2000}
    for route in ("/small/tokens", "/queue/small/tokens"):
        response = gw.http.post(route, json=big)
        assert response.status_code == 413, response.text
        assert "limit of 0.001 MiB" in response.json()["detail"]
        assert "max_body_mb" in response.json()["detail"]
    # Without a content-length up front (chunked), the limit holds as the body is read.
    chunks = iter([b'{"key": "', b"y" * 2000, b'"}'])
    response = gw.http.post(
        "/small/tokens", content=chunks, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413
    _untouched(gw, "small")


def test_a_json_endpoint_says_what_content_type_it_wants(gw: GatewayProc) -> None:
    plain = gw.http.post("/bodies/tokens", content=b"key=x")
    assert plain.status_code == 415
    assert "no Content-Type" in plain.json()["detail"]
    assert "send Content-Type: application/json" in plain.json()["detail"]
    form = gw.http.post("/queue/bodies/tokens", data={"key": "x"})
    assert form.status_code == 415
    assert "got application/x-www-form-urlencoded" in form.json()["detail"]
    _untouched(gw, "bodies")
    # JSON sent without the header is still taken as JSON.
    bare = gw.http.post("/queue/bodies/tokens", content=b'{"key": "bare", "n": 1}')
    assert bare.status_code == 202, bare.text
    status = gw.wait_done(bare.json())
    assert status["response_status"] == 200


def test_a_body_over_a_mib_is_left_to_the_runner_to_validate(gw: GatewayProc) -> None:
    big = {"n": "not a number", "pad": "x" * (2 * 1024 * 1024)}  # no key, n is wrong
    submitted = gw.http.post("/queue/bodies/tokens", json=big)
    assert submitted.status_code == 202, submitted.text  # not parsed at the gateway
    status = gw.wait_done(submitted.json())
    assert status["response_status"] == 422 and status["error_type"] == "validation_error"
