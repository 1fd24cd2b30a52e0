"""The local provider: runners as 127.0.0.1 subprocesses with logs; the gateway as a daemon."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import httpx
import pytest
from support.gateway import ADMIN, BUNDLE_KEY, RUNNER_TOKEN
from support.procs import TAG_VAR, pid_alive
from support.waiting import wait_for

from skyform.errors import SkyformError
from skyform.providers import create_provider
from skyform.providers.base import GatewaySpec, RunnerSpec
from skyform.providers.local import LocalProvider, free_port, runner_python
from skyform.providers.processenv import RUNTIME_VARS

pytestmark = pytest.mark.slow


def _listening_address(port: int) -> str | None:
    """The local address a TCP socket listens on at `port` (from /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        addr, port_hex = fields[1].split(":")
        if int(port_hex, 16) == port and fields[3] == "0A":
            return ".".join(str(int(addr[i : i + 2], 16)) for i in (6, 4, 2, 0))
    return None


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/health").status_code == 200
    except httpx.HTTPError:
        return False


def test_runner_subprocess_binds_localhost_and_logs(
    tmp_path: Path, bundles, tag: str, no_leftovers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKYFORM_ADMIN_TOKEN", "must-not-reach-the-runner")
    monkeypatch.setenv("DEPLOYER_ONLY_X", "must-not-reach-the-runner")
    bundle_path = bundles["echo"].write(tmp_path / "echo.bundle")
    provider = create_provider("local", stack="t", runtime_dir=tmp_path / "rt")
    assert isinstance(provider, LocalProvider)
    spec = RunnerSpec(
        stack="t",
        app="echo",
        revision=bundles["echo"].revision,
        bundle_path=bundle_path,
        machine_types=["CPU"],
        requirements=[],
        python_version="3.11",
        env={TAG_VAR: tag},
        runner_id="echo-test1",
        secrets={"APP_SECRET_X": "app-secret-value"},
        bundle_key=BUNDLE_KEY,
        runner_token=RUNNER_TOKEN,
    )
    assert runner_python(spec)
    handle = provider.start_runner(spec)
    try:
        assert handle.url.startswith("http://127.0.0.1:")
        port = int(handle.url.rsplit(":", 1)[1])
        wait_for(lambda: _ready(handle.url), 30, "runner ready")
        assert _listening_address(port) == "127.0.0.1"
        assert provider.runner_alive(handle)
        assert [h.runner_id for h in provider.list_runners("t")] == ["echo-test1"]
        # Calls need the runner token.
        assert httpx.post(handle.url + "/", json={"text": "x"}).status_code == 401
        ok = httpx.post(
            handle.url + "/",
            json={"text": "x"},
            headers={"Authorization": f"Bearer {RUNNER_TOKEN}"},
        )
        assert ok.status_code == 200
        environ = Path(f"/proc/{handle.info['pid']}/environ").read_bytes().split(b"\0")
        assert b"SKYFORM_APP_NAME=echo" in environ
        # Only the runtime's needs and the app's env: no key, token, secret or deployer variable.
        names = {e.split(b"=", 1)[0].decode() for e in environ if e}
        allowed = {*RUNTIME_VARS, "HOME", "USER", "LOGNAME", "VIRTUAL_ENV", "PYTHONUNBUFFERED"}
        assert names - allowed == {"SKYFORM_APP_NAME", TAG_VAR}
        raw = b"\0".join(environ)
        for value in (BUNDLE_KEY, RUNNER_TOKEN, "app-secret-value", "must-not-reach-the-runner"):
            assert value.encode() not in raw
    finally:
        provider.stop_runner(handle, grace=5)
    assert not provider.runner_alive(handle)
    assert (tmp_path / "rt" / "runners" / "echo-test1.log").exists()
    assert provider.list_runners("t") == []


def test_local_provider_rejects_options(tmp_path: Path) -> None:
    with pytest.raises(SkyformError, match="no options"):
        create_provider({"local": {"zone": "x"}}, stack="t", runtime_dir=tmp_path)


def test_gateway_daemon_start_alive_stop(
    tmp_path: Path, bundles, tag: str, no_leftovers: None
) -> None:
    provider = LocalProvider("t", tmp_path / "rt")
    state_dir = tmp_path / "gw"
    keys = {
        "SKYFORM_ADMIN_TOKEN": ADMIN,
        "SKYFORM_BUNDLE_KEY": BUNDLE_KEY,
        "SKYFORM_RUNNER_TOKEN": RUNNER_TOKEN,
    }
    spec = GatewaySpec("t", free_port(), state_dir, {TAG_VAR: tag}, credentials=keys)
    handle = provider.start_gateway(spec)
    try:
        pid = handle.info["pid"]
        assert isinstance(pid, int) and os.getpgid(pid) == pid  # its own session
        assert (state_dir / "gateway.pid").read_text().strip() == str(pid)
        assert provider.gateway_alive(handle)
        health = httpx.get(handle.url + "/-/health", headers={"Authorization": f"Bearer {ADMIN}"})
        assert health.json()["pid"] == pid and health.json()["stack"] == "t"
        assert (state_dir / "gateway.log").exists()
        # Its keys came on a pipe: none is in its start-up environment.
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert not any(value.encode() in environ for value in keys.values())
    finally:
        provider.stop_gateway(handle, grace=20)
    assert not pid_alive(pid)
    assert not provider.gateway_alive(handle)


def test_gateway_that_cannot_start_is_a_clear_error(tmp_path: Path, tag: str) -> None:
    provider = LocalProvider("t", tmp_path / "rt")
    state_dir = tmp_path / "gw"
    state_dir.mkdir()
    (state_dir / "provider.json").write_text('"nonsense"')
    started = time.monotonic()
    with pytest.raises(SkyformError, match="gateway exited") as info:
        provider.start_gateway(GatewaySpec("t", free_port(), state_dir, {TAG_VAR: tag}))
    assert 'unknown provider "nonsense"' in str(info.value)
    assert time.monotonic() - started < 30


def test_gateway_on_a_busy_port_is_a_clear_error(tmp_path: Path, tag: str) -> None:
    provider = LocalProvider("t", tmp_path / "rt")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(SkyformError, match="gateway exited") as info:
            provider.start_gateway(GatewaySpec("t", port, tmp_path / "gw", {TAG_VAR: tag}))
    assert "address already in use" in str(info.value)
