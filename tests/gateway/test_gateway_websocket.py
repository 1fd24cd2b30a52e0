"""WebSocket endpoints through the gateway: relay, slots, auth, close codes.

(fal-client's realtime over TLS: test_gateway_stream_tls.py.)
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.gateway import API_KEY, APPS, BUNDLE_KEY, GatewayProc
from support.waiting import wait_for
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from skyform.bundle import build_bundle

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gw(shared_gateway: GatewayProc) -> Iterator[GatewayProc]:
    ref = str(APPS / "gw_stream.py") + "::Streamer"
    shared_gateway.register("sock", build_bundle(ref, APPS, BUNDLE_KEY), auth="public")
    shared_gateway.register("psock", build_bundle(ref, APPS, BUNDLE_KEY), auth="private")
    yield shared_gateway


def _ws_url(gw: GatewayProc, path: str) -> str:
    return gw.url.replace("http://", "ws://") + path


def _ready_pids(gw: GatewayProc, app: str) -> list[int]:
    return [r["pid"] for r in gw.runners(app)]


def test_frames_are_relayed_from_zero_runners_and_hold_a_slot(gw: GatewayProc) -> None:
    assert gw.app("sock")["runners"] == []
    with connect(_ws_url(gw, "/sock/ws"), open_timeout=60) as ws:  # starts the first runner
        ws.send("hello")
        text = ws.recv(timeout=30)
        assert isinstance(text, str) and text.startswith("echo:hello:")
        ws.send(b"\x00\x01bin")
        assert ws.recv(timeout=30) == b"\x00\x01bin"
        assert [r["in_flight"] for r in gw.runners("sock")] == [1]
        assert int(text.rsplit(":", 1)[1]) in _ready_pids(gw, "sock")
    wait_for(lambda: [r["in_flight"] for r in gw.runners("sock")] == [0], 10, "the slot to free")


def test_refusals_are_http_answers(gw: GatewayProc) -> None:
    with pytest.raises(InvalidStatus) as missing:
        connect(_ws_url(gw, "/sock/nows"), open_timeout=30)
    assert missing.value.response.status_code == 404
    assert b"no websocket endpoint /nows" in missing.value.response.body
    for route in ("/sock/ws", "/queue/sock/ws"):
        plain = gw.http.post(route, json={})
        assert plain.status_code == 405 and "open a websocket" in plain.json()["detail"]
    with pytest.raises(InvalidStatus) as private:
        connect(_ws_url(gw, "/psock/ws"), open_timeout=30)
    assert private.value.response.status_code == 401
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with connect(_ws_url(gw, "/psock/ws"), additional_headers=headers, open_timeout=60) as ws:
        ws.send("ok")
        assert str(ws.recv(timeout=30)).startswith("echo:ok:")


def test_a_handler_error_closes_1011_and_the_runner_keeps_serving(gw: GatewayProc) -> None:
    with connect(_ws_url(gw, "/sock/ws"), open_timeout=60) as ws:
        ws.send("who")
        pid = int(str(ws.recv(timeout=30)).rsplit(":", 1)[1])
        ws.send("boom")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    with connect(_ws_url(gw, "/sock/ws"), open_timeout=60) as ws:
        ws.send("again")
        assert int(str(ws.recv(timeout=30)).rsplit(":", 1)[1]) == pid


def test_an_unhealthy_runner_closes_1013_and_is_replaced(gw: GatewayProc) -> None:
    with connect(_ws_url(gw, "/sock/ws"), open_timeout=60) as ws:
        ws.send("who")
        pid = int(str(ws.recv(timeout=30)).rsplit(":", 1)[1])
        ws.send("cuda")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    wait_for(lambda: pid not in _ready_pids(gw, "sock"), 30, "the unhealthy runner to go")
    with connect(_ws_url(gw, "/sock/ws"), open_timeout=60) as ws:  # a fresh runner serves it
        ws.send("next")
        assert int(str(ws.recv(timeout=30)).rsplit(":", 1)[1]) != pid
