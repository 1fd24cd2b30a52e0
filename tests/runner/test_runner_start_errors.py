"""Bad starts (key, bundle, arguments, port) and the runner token."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from support.procs import free_port
from support.runner import KEY, runner_env, running

pytestmark = pytest.mark.slow


def _start(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "skyform.runtime.runner", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def _assert_refused(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("skyform runner: ")
    for needle in needles:
        assert needle in lines[0]
    assert result.stdout == ""


def _not_listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_missing_key(bundles: dict[str, Path], tmp_path: Path) -> None:
    env = runner_env(tmp_path)
    del env["SKYFORM_BUNDLE_KEY"]
    port = free_port()
    result = _start(["--bundle", str(bundles["probe"]), "--port", str(port)], env)
    _assert_refused(result, "SKYFORM_BUNDLE_KEY is not set")
    assert _not_listening(port)


def test_wrong_key(bundles: dict[str, Path], tmp_path: Path) -> None:
    env = runner_env(tmp_path, SKYFORM_BUNDLE_KEY=KEY + "-other")
    port = free_port()
    result = _start(["--bundle", str(bundles["probe"]), "--port", str(port)], env)
    _assert_refused(result, "signature does not match")
    assert _not_listening(port)


def test_tampered_bundle(bundles: dict[str, Path], tmp_path: Path) -> None:
    data = bytearray(bundles["probe"].read_bytes())
    data[-10] ^= 0xFF
    tampered = tmp_path / "tampered.skyb"
    tampered.write_bytes(bytes(data))
    port = free_port()
    result = _start(["--bundle", str(tampered), "--port", str(port)], runner_env(tmp_path))
    _assert_refused(result, "tampered")
    assert _not_listening(port)


def test_missing_bundle_file(tmp_path: Path) -> None:
    port = free_port()
    result = _start(
        ["--bundle", str(tmp_path / "nope.skyb"), "--port", str(port)], runner_env(tmp_path)
    )
    _assert_refused(result, "cannot read bundle")
    assert _not_listening(port)


def test_not_a_bundle(tmp_path: Path) -> None:
    junk = tmp_path / "junk.skyb"
    junk.write_text("hello")
    result = _start(["--bundle", str(junk), "--port", str(free_port())], runner_env(tmp_path))
    _assert_refused(result, "not a skyform bundle")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--port", "8000"], "--bundle"),
        (["--bundle", "x.skyb"], "--port"),
        (["--bundle", "x.skyb", "--port", "eighty"], "invalid int value"),
        (["--bundle", "x.skyb", "--port", "70000"], "not a TCP port"),
    ],
)
def test_bad_arguments(tmp_path: Path, args: list[str], needle: str) -> None:
    _assert_refused(_start(args, runner_env(tmp_path)), needle)


def test_port_in_use(bundles: dict[str, Path], tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = _start(
            ["--bundle", str(bundles["probe"]), "--port", str(port)], runner_env(tmp_path)
        )
    _assert_refused(result, f"cannot listen on 127.0.0.1:{port}")


def test_runner_token_guards_every_route_but_health(
    bundles: dict[str, Path], tmp_path: Path
) -> None:
    with running(bundles["probe"], tmp_path, token="s3cret-token") as runner:
        runner.wait_ready()
        base = runner.url
        assert httpx.get(f"{base}/health", timeout=5).status_code == 200
        for method, path in [
            ("POST", "/"),
            ("GET", "/metrics"),
            ("GET", "/openapi.json"),
            ("POST", "/nowhere"),
        ]:
            bare = httpx.request(method, base + path, json={"x": 1}, timeout=5)
            assert bare.status_code == 401, path
            assert bare.json()["error_type"] == "unauthorized"
            wrong = httpx.request(
                method,
                base + path,
                json={"x": 1},
                headers={"Authorization": "Bearer nope"},
                timeout=5,
            )
            assert wrong.status_code == 401, path
        with runner.client() as client:
            assert client.post("/", json={"x": 2}).json() == {"y": 4}
            assert client.get("/metrics").status_code == 200
            assert client.get("/openapi.json").status_code == 200
