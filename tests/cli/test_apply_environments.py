"""`apply` builds each app's environment first: progress shown, a broken app fails alone."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from support.cli import keys_of, sky, write_project
from support.procs import processes_under

pytestmark = pytest.mark.slow

UNINSTALLABLE = "pydantic<2"  # fights the runtime's own pydantic>=2: the installer refuses


def _wait_completed(url: str, headers: dict[str, str], limit: float = 120) -> dict:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status = httpx.get(url, headers=headers, timeout=30).json()
        if status["status"] == "COMPLETED":
            return status
        time.sleep(0.2)
    raise AssertionError(f"request never completed: {status}")


def test_an_app_whose_requirements_cannot_install_fails_alone(tmp_path: Path) -> None:
    root = write_project(
        tmp_path / "proj",
        {
            "hello": {"app": "app.py::Hello", "min_runners": 1},
            "broken": {"app": "other.py::Other", "requirements": [UNINSTALLABLE]},
        },
    )
    try:
        result = sky(root, "apply", "--auto-approve", timeout=400)
        assert result.returncode == 1, result.stdout + result.stderr
        shown = result.stdout + result.stderr
        assert "app.hello: environment" in shown  # build progress, per app
        assert "app.broken: environment build failed" in shown
        error = result.stderr
        assert "Error: app broken: environment build failed" in error
        assert "pydantic" in error  # the installer's own words about the conflict
        assert "Traceback" not in result.stderr

        outputs = json.loads(sky(root, "output", "--json").stdout)
        headers = {"Authorization": f"Bearer {keys_of(root)['api_key']}"}
        hello = httpx.post(
            outputs["apps"]["hello"]["url"], json={"name": "env"}, headers=headers, timeout=60
        )
        assert hello.status_code == 200, hello.text
        assert hello.json()["message"] == "Hello, env!"

        queue_url = outputs["apps"]["broken"]["queue_url"].rstrip("/") + "/"
        submitted = httpx.post(queue_url, json={}, headers=headers, timeout=30)
        assert submitted.status_code == 202, submitted.text
        done = _wait_completed(submitted.json()["status_url"], headers)
        assert done["error_type"] == "environment_build_failed"
        assert "pydantic" in done["error"]

        status = sky(root, "status", "--json")
        assert status.returncode == 0, status.stderr
        (broken,) = [a for a in json.loads(status.stdout)["apps"] if a["name"] == "broken"]
        assert broken["last_error_type"] == "environment_build_failed"
        assert "pydantic" in broken["last_error"]
        human = sky(root, "status")
        assert "app.broken: last error:" in human.stdout
    finally:
        sky(root, "destroy", "--auto-approve", timeout=120)
    assert processes_under(root) == []
