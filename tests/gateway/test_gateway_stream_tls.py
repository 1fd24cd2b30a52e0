"""Streams and websockets over TLS end to end, driven by the real fal-client.

One gateway on https (the stack CA's certificate) whose local runners serve
TLS too: fal-client's `stream` (https) and `realtime`/`ws_connect` (wss, msgpack
frames) reach the app through the gateway, and the gateway reaches the runner
over verified TLS (wss for the websocket).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.gateway import API_KEY, APPS, BUNDLE_KEY, GatewayProc
from support.procs import assert_none_left

from skyform.bundle import build_bundle
from skyform.engine.tls import ensure_leaf

pytestmark = pytest.mark.slow
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "stream"


@pytest.fixture(scope="module")
def tls_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProc, Path]]:
    """The gateway and the CA file its clients trust."""
    root = tmp_path_factory.mktemp("tlsgw")
    gateway_cert = ensure_leaf(root / "pki", "test", "gateway", [])
    runner_cert = ensure_leaf(root / "pki", "test", "runner", [])
    state = root / "state"
    state.mkdir()
    (state / "provider.json").write_text(json.dumps({"local": {"runner_tls": True}}))
    counts = root / "counts"
    counts.mkdir()
    tag = uuid.uuid4().hex
    args = ("--tls-cert", str(gateway_cert.cert), "--tls-key", str(gateway_cert.key))
    args += ("--runner-cert", str(runner_cert.cert), "--runner-key", str(runner_cert.key))
    args += ("--runner-ca", str(runner_cert.ca))
    gw = GatewayProc(state, tag, counts, args=args, ca_file=gateway_cert.ca)
    try:
        gw.start()
        ref = str(APPS / "gw_stream.py") + "::Streamer"
        gw.register("sock", build_bundle(ref, APPS, BUNDLE_KEY), auth="private")
        example = build_bundle(str(EXAMPLE / "app.py") + "::TextGen", EXAMPLE, BUNDLE_KEY)
        gw.register("textgen", example, auth="private")
        yield gw, gateway_cert.ca
    finally:
        gw.stop()
        gw.http.close()
        assert_none_left(tag, "the module")


def _fal(gw: GatewayProc, ca: Path, script: str) -> str:
    """Run `script` with fal-client pointed at the gateway (as the README says); its stdout."""
    env = dict(
        os.environ,
        FAL_RUN_HOST=f"127.0.0.1:{gw.port}",
        FAL_KEY=API_KEY,
        SSL_CERT_FILE=str(ca),
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_fal_client_realtime_and_ws_connect_through_the_gateway(
    tls_gw: tuple[GatewayProc, Path],
) -> None:
    gw, ca = tls_gw
    out = _fal(
        gw,
        ca,
        """
        import fal_client
        with fal_client.realtime("test/sock", path="/ws", use_jwt=False) as conn:
            conn.send({"prompt": "hi", "n": 2})
            print("got", conn.recv())
        with fal_client.ws_connect("test/sock", path="/ws", use_jwt=False) as ws:
            ws.send("plain")
            print("raw", ws.recv())
        """,
    )
    assert "got {'prompt': 'hi', 'n': 2}" in out  # msgpack both ways, relayed as it is
    assert "raw echo:plain:" in out
    (runner,) = gw.runners("sock")
    assert runner["url"].startswith("https://")  # the gateway reached it over wss


def test_the_example_streams_to_fal_client_and_curl(tls_gw: tuple[GatewayProc, Path]) -> None:
    gw, ca = tls_gw
    body = json.dumps({"prompt": "the", "max_tokens": 5, "seed": 7, "delay": 0})
    out = _fal(
        gw,
        ca,
        f"""
        import json, fal_client
        print(json.dumps(list(fal_client.stream("textgen", {body}, path="/stream"))))
        """,
    )
    tokens = json.loads(out)
    assert [t["index"] for t in tokens] == [0, 1, 2, 3, 4]
    command = [
        *("curl", "-N", "-sS", "--fail-with-body", "--cacert", str(ca)),
        *(f"{gw.url}/textgen/stream", "-H", f"Authorization: Bearer {API_KEY}"),
        *("-H", "Content-Type: application/json", "-d", body),
    ]
    curl = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert curl.returncode == 0, curl.stderr + curl.stdout
    lines = [line[5:].strip() for line in curl.stdout.splitlines() if line.startswith("data:")]
    assert [json.loads(line) for line in lines] == tokens  # the same seed, the same tokens
