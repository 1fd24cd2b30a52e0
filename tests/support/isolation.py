"""Helpers for the isolation tests: a two-app stack of probes, and what it must never leak."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import httpx

from support.cli import keys_of, stack_yaml, state_of
from support.procs import free_port

PROBE = Path(__file__).resolve().parents[1] / "isolation" / "apps" / "probe.py"
MY_SECRET = "my-5ecret-value-only-for-priv-7731"
CI_CREDENTIAL = "ci-credential-of-the-deployer-5512"

APPS: dict[str, dict[str, Any]] = {
    "pub": {"app": "probe.py::Probe", "auth": "public", "min_runners": 1},
    "priv": {
        "app": "probe.py::Probe",
        "auth": "private",
        "min_runners": 1,
        "secrets": ["MY_SECRET"],
    },
}


def write_probe_project(root: Path, name: str = "iso") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROBE, root / "probe.py")
    (root / "skyform.yaml").write_text(stack_yaml(name, free_port(), APPS))
    return root


def deployer_env() -> dict[str, str]:
    """What the deployer's shell holds at apply: the app's secret and an unrelated credential."""
    return {"MY_SECRET": MY_SECRET, "CI_CREDENTIAL": CI_CREDENTIAL}


def forbidden(root: Path, stack: str = "iso") -> dict[str, str]:
    """Every value app code must never see: the stack's keys, the deployer's credential,
    and (for any app but priv) priv's secret."""
    keys = keys_of(root, stack)
    return {**keys, "CI_CREDENTIAL": CI_CREDENTIAL, "MY_SECRET": MY_SECRET}


def gateway_url(root: Path, stack: str = "iso") -> str:
    return str(state_of(root, stack)["outputs"]["gateway_url"])


def admin(root: Path, stack: str = "iso") -> httpx.Client:
    token = keys_of(root, stack)["admin_token"]
    return httpx.Client(
        base_url=gateway_url(root, stack),
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
        trust_env=False,
    )


def runner_urls(root: Path, app: str, stack: str = "iso") -> list[str]:
    with admin(root, stack) as client:
        runners = client.get(f"/-/apps/{app}").json()["runners"]
    return [r["url"] for r in runners if r["state"] == "ready"]


def call(root: Path, app: str, path: str, body: Any = None, stack: str = "iso") -> Any:
    headers = {"Authorization": f"Bearer {keys_of(root, stack)['api_key']}"}
    response = httpx.post(
        f"{gateway_url(root, stack)}/{app}{path}",
        json=body if body is not None else {},
        headers=headers,
        timeout=120,
        trust_env=False,
    )
    assert response.status_code == 200, response.text
    return response.json()


def leaks(text: str, values: dict[str, str]) -> list[str]:
    """Which of `values` (by name) occur in `text`."""
    return sorted(name for name, value in values.items() if value and value in text)


def dump(value: Any) -> str:
    return json.dumps(value)
