"""The gateway process driver, shared by the gateway and fal tests: start, register, call, stop."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from skyform.bundle import Bundle
from skyform.tlscontext import client_context
from support.procs import TAG_VAR, free_port
from support.waiting import wait_for

APPS = Path(__file__).resolve().parents[1] / "gateway" / "apps"
BUNDLE_KEY = "gateway-test-bundle-key-0123456789abcdef"
ADMIN = "gateway-test-admin-token"
API_KEY = "gateway-test-api-key"
RUNNER_TOKEN = "gateway-test-runner-token"


class GatewayProc:
    """One gateway process started by a test, with helpers for its API."""

    def __init__(
        self,
        state_dir: Path,
        tag: str,
        count_dir: Path,
        port: int | None = None,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        ca_file: Path | None = None,
    ) -> None:
        """`args`: more gateway arguments; with `--tls-cert`, `http` verifies against `ca_file`."""
        self.state_dir = state_dir
        self.env = env or {}
        self.tag = tag
        self.count_dir = count_dir
        self.port = port or free_port()
        self.args = args
        scheme = "https" if "--tls-cert" in args else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        verify = client_context(ca_file) if ca_file else True
        self.http = httpx.Client(base_url=self.url, timeout=60.0, trust_env=False, verify=verify)
        self.admin_headers = {"Authorization": f"Bearer {ADMIN}"}

    def start(self) -> GatewayProc:
        env = dict(
            os.environ,
            SKYFORM_ADMIN_TOKEN=ADMIN,
            SKYFORM_API_KEY=API_KEY,
            SKYFORM_RUNNER_TOKEN=RUNNER_TOKEN,
            SKYFORM_BUNDLE_KEY=BUNDLE_KEY,
            GW_COUNT_DIR=str(self.count_dir),
            **{TAG_VAR: self.tag},
            **self.env,
        )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.state_dir / "test-gateway.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "skyform.runtime.gateway",
                "--port",
                str(self.port),
                "--state-dir",
                str(self.state_dir),
                "--stack",
                "test",
                *self.args,
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(self._up, 30, "the gateway to answer")
        return self

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"gateway exited: {self.log()[-2000:]}")
        try:
            return self.http.get("/-/health", headers=self.admin_headers).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        try:
            return (self.state_dir / "test-gateway.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, sig: int = 15, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, path, headers=self.admin_headers, **kwargs)

    def register(
        self, name: str, bundle: Bundle, auth: str = "public", env: dict[str, str] | None = None
    ) -> httpx.Response:
        payload = {
            "bundle_b64": base64.b64encode(bundle.data).decode(),
            "auth": auth,
            "env": self.runner_env(env),
        }
        response = self.admin("PUT", f"/-/apps/{name}", json=payload)
        assert response.status_code == 200, response.text
        return response

    def runner_env(self, env: dict[str, str] | None = None) -> dict[str, str]:
        """An app's env with what the tests need on its runners (which inherit nothing):
        the leftover-check tag and the call-count folder."""
        return {TAG_VAR: self.tag, "GW_COUNT_DIR": str(self.count_dir), **(env or {})}

    def app(self, name: str) -> dict[str, Any]:
        response = self.admin("GET", f"/-/apps/{name}")
        assert response.status_code == 200, response.text
        return response.json()

    def runners(self, name: str, states: tuple[str, ...] = ("ready",)) -> list[dict[str, Any]]:
        return [r for r in self.app(name)["runners"] if r["state"] in states]

    def submit(self, app: str, path: str, body: Any, **kwargs: Any) -> dict[str, Any]:
        response = self.http.post(f"/queue/{app}{path}", json=body, **kwargs)
        assert response.status_code == 202, response.text
        return response.json()

    def wait_done(self, submitted: dict[str, Any], timeout: float = 60.0) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            status = self.http.get(submitted["status_url"]).json()
            return status if status["status"] == "COMPLETED" else None

        return wait_for(done, timeout, f"request {submitted['request_id']}")
