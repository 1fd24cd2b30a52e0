"""Without httptools (a platform lacking its wheels), the gateway still serves:
it falls back to uvicorn's h11 protocol and says so, instead of failing to start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.gateway import GatewayProc


@pytest.fixture
def no_httptools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`import httptools` fails in the gateway (and the runners it starts)."""
    shim = tmp_path / "no-httptools"
    shim.mkdir()
    (shim / "httptools.py").write_text('raise ImportError("httptools hidden by the test")\n')
    paths = [str(shim), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))


def test_gateway_serves_on_h11_without_httptools(no_httptools: None, gateway: GatewayProc, bundles):
    gateway.register("echo", bundles["echo_public"], auth="public")
    response = gateway.http.post("/echo/", json={"text": "hi"})
    assert response.status_code == 200, response.text
    assert response.json()["echo"] == "hi"
    assert "httptools is not installed" in gateway.log()
