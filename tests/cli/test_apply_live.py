"""`apply` means live, tainted apps, `output api_key`, and `logs`, on one real stack.

One stack (a real gateway daemon, real runners, real HTTP) is applied once for
the module; the tests run in order, each leaving it applied, and the module
destroys it and checks that no process is left.

- `warm` keeps a runner (`min_runners: 1`); `cold` has `min_runners: 0` but is
  warmed by a call before the code changes: after `apply` every call must be
  served by the new code, for both.
- A `setup()` that fails taints the app: the apply error names the runner that
  just failed, and the next plan replaces the app until an apply makes it live.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.cli import cleanup, keys_of, sky, state_of, write_project
from support.procs import processes_under

pytestmark = pytest.mark.slow

LIVE_APP = """import logging
import os
import time

from skyform import App, endpoint

VERSION = {version!r}
MARKER = {marker!r}
log = logging.getLogger("live")


class Live(App):
    keep_alive = 120

    def setup(self) -> None:
        time.sleep(float(os.environ.get("SETUP_DELAY", "0")))
        if MARKER and os.environ.get("NEEDS_WEIGHTS") and not os.path.exists(MARKER):
            raise RuntimeError(f"weights missing: {{MARKER}}")

    @endpoint("/")
    def version(self) -> dict:
        print(f"serving {{VERSION}}")
        log.info("answered %s", VERSION)
        return {{"version": VERSION}}
"""

APPS = {
    # Slower to start than warm: apply must wait for it too, though min_runners is 0.
    "cold": {"app": "live.py::Live", "min_runners": 0, "env": {"SETUP_DELAY": "2"}},
    "warm": {"app": "live.py::Live", "min_runners": 1, "env": {"NEEDS_WEIGHTS": "1"}},
    "idle": {"app": "live.py::Live", "min_runners": 0},  # never called: never has a runner
}
LOG_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (cold|warm)-[0-9a-f]{8} [A-Z]+ \S+ "
)


def write_app(root: Path, version: str, marker: str = "") -> None:
    (root / "live.py").write_text(LIVE_APP.format(version=version, marker=marker))


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = write_project(tmp_path_factory.mktemp("live") / "proj", APPS)
    write_app(root, "v1")
    try:
        proc = sky(root, "apply", "--auto-approve")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield root
    finally:
        cleanup(root)
        assert processes_under(root) == []


def call(root: Path, app: str) -> httpx.Response:
    base = state_of(root)["outputs"]["gateway_url"]
    key = keys_of(root)["api_key"]
    return httpx.post(
        f"{base}/{app}/", json={}, headers={"Authorization": f"Bearer {key}"}, timeout=60
    )


def versions(root: Path, app: str, n: int) -> list[str]:
    out = []
    for _ in range(n):
        answer = call(root, app)
        assert answer.status_code == 200, answer.text
        out.append(answer.json()["version"])
    return out


def live_apps(root: Path) -> dict[str, Any]:
    base = state_of(root)["outputs"]["gateway_url"]
    token = keys_of(root)["admin_token"]
    apps = httpx.get(f"{base}/-/apps", headers={"Authorization": f"Bearer {token}"}).json()
    return {a["name"]: a for a in apps["apps"]}


def test_output_api_key_is_sensitive_and_raw_for_scripts(root: Path) -> None:
    key = keys_of(root)["api_key"]
    listing = sky(root, "output")
    assert listing.returncode == 0, listing.stderr
    assert "api_key = <sensitive>" in listing.stdout and key not in listing.stdout
    assert key not in sky(root, "output", "--json").stdout
    named = sky(root, "output", "api_key")
    assert named.returncode == 0 and named.stdout == json.dumps(key) + "\n"
    raw = sky(root, "output", "--raw", "api_key")
    assert raw.returncode == 0 and raw.stdout == key
    url = sky(root, "output", "--raw", "gateway_url").stdout
    assert url == state_of(root)["outputs"]["gateway_url"]
    # What the README's curl line does: the key from `output --raw` opens a private app.
    answer = httpx.post(
        f"{url}/warm/", json={}, headers={"Authorization": f"Bearer {raw.stdout}"}, timeout=60
    )
    assert answer.status_code == 200 and answer.json() == {"version": "v1"}
    bad = sky(root, "output", "api_kye")
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert 'did you mean "api_key"' in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    apps = sky(root, "output", "--raw", "apps")
    assert apps.returncode == 1 and "--raw cannot print it" in apps.stderr


def test_apply_returns_only_when_the_new_revision_serves_everything(root: Path) -> None:
    assert versions(root, "warm", 2) == ["v1", "v1"]
    assert versions(root, "cold", 2) == ["v1", "v1"]  # cold now has a warm runner too
    before = live_apps(root)
    assert any(r["state"] == "ready" for r in before["cold"]["runners"])
    write_app(root, "v2")
    proc = sky(root, "apply", "--auto-approve")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Apply complete!" in proc.stdout
    # Progress while it waited for the old runners to be replaced.
    assert "app.cold: 0/1 runners ready (1 of the old revision still serving" in proc.stderr
    assert "app.cold: 1/1 runners ready\n" in proc.stderr  # shown until its replacement is done
    # No runner of the old revision takes requests any more when apply returns.
    apps = live_apps(root)
    for name in ("cold", "warm"):
        old = [
            r
            for r in apps[name]["runners"]
            if r["generation"] != apps[name]["generation"] and r["state"] == "ready"
        ]
        assert old == [], (name, apps[name]["runners"])
    assert versions(root, "warm", 20) == ["v2"] * 20
    assert versions(root, "cold", 20) == ["v2"] * 20


def test_replace_rolls_the_same_revision_onto_new_runners(root: Path) -> None:
    def ready(app: dict[str, Any]) -> set[str]:
        return {r["id"] for r in app["runners"] if r["state"] == "ready"}

    before = live_apps(root)["warm"]
    proc = sky(root, "apply", "--auto-approve", "--replace", "warm")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "app.warm will get a new revision" in proc.stdout and "(--replace)" in proc.stdout
    after = live_apps(root)["warm"]
    assert after["revision"] == before["revision"]  # same code...
    assert ready(after) and not ready(after) & ready(before)  # ...on fresh runners only
    assert versions(root, "warm", 5) == [versions(root, "warm", 1)[0]] * 5


def test_logs_show_the_current_revision_with_time_runner_and_request(root: Path) -> None:
    answer = call(root, "warm")
    request_id = answer.headers["x-skyform-request-id"]  # the gateway's id for this call
    two = sky(root, "logs", "warm", "--tail", "2")
    assert two.returncode == 0, two.stderr
    lines = two.stdout.splitlines()
    assert len(lines) == 2 and all(LOG_LINE.match(ln) for ln in lines), lines
    current = sky(root, "logs", "warm", "--tail", "1000").stdout.splitlines()
    assert current and all(LOG_LINE.match(ln) for ln in current), current
    assert not any("serving v1" in ln for ln in current)  # old revision's runner: not by default
    served = [ln for ln in current if "serving v2" in ln]
    assert served and all(re.search(r" \[[0-9a-f]{32}\] serving v2$", ln) for ln in served)
    assert any(ln.endswith(f"[{request_id}] serving v2") for ln in current), request_id
    every = sky(root, "logs", "warm", "--all", "--tail", "1000").stdout.splitlines()
    assert any("serving v1" in ln for ln in every) and len(every) > len(current)
    idle = sky(root, "logs", "idle")
    assert idle.returncode == 0 and idle.stdout == ""
    assert "no log lines from runners of its current revision" in idle.stderr
    bad = sky(root, "logs", "warm", "--tail", "-1")
    assert bad.returncode == 1 and "--tail -1" in bad.stderr and "Traceback" not in bad.stderr


@pytest.fixture
def readable_dir() -> Iterator[Path]:
    """A folder the runners can read: run as root, skyform drops them to another
    user, who cannot enter the test's own (0700) temporary folders."""
    with tempfile.TemporaryDirectory(prefix="skyform-weights-") as folder:
        os.chmod(folder, 0o755)
        yield Path(folder)


def test_failed_setup_taints_the_app_until_an_apply_makes_it_live(
    root: Path, readable_dir: Path
) -> None:
    marker = readable_dir / "weights.bin"
    serving = versions(root, "warm", 1)
    write_app(root, "v3", str(marker))
    before = {r["id"] for app in live_apps(root).values() for r in app["runners"]}
    proc = sky(root, "apply", "--auto-approve", timeout=180)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    error = [ln for ln in proc.stderr.splitlines() if ln.startswith("Error:")]
    assert len(error) == 1 and "weights missing" in error[0], proc.stderr
    # The error names a runner that just failed: one of this apply's, of the new revision.
    named = set(re.findall(r"runner ((?:cold|warm)-[0-9a-f]{8})", error[0]))
    assert "app cold" not in error[0]  # its setup() needs no weights: it went live
    apps = live_apps(root)
    fresh_failed = {
        r["id"]
        for app in apps.values()
        for r in app["runners"]
        if r["state"] == "failed" and r["id"] not in before
    }
    assert named and named <= fresh_failed, (error[0], fresh_failed)
    # The old revision keeps serving the warm app.
    assert versions(root, "warm", 3) == serving * 3
    record = state_of(root)["resources"]["app.warm"]
    assert "weights missing" in record["tainted"]["reason"]

    plan = sky(root, "plan", "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "app.warm is tainted, so it will get a new revision" in plan.stdout
    assert re.search(r"# tainted: .*weights missing", plan.stdout)
    assert '+/- resource "app" "warm"' in plan.stdout
    as_json = json.loads(sky(root, "plan", "--json").stdout)
    warm = next(c for c in as_json["resource_changes"] if c["address"] == "app.warm")
    assert warm["actions"] == ["create", "delete"]
    assert warm["action_reason"] == "replace_because_tainted"
    assert "weights missing" in warm["tainted"]
    status = sky(root, "status")
    assert status.returncode == 0 and "weights missing" in status.stdout
    assert "tainted" in status.stdout

    # Still broken: a second apply blames one of its own runners, not the first apply's.
    seen = {r["id"] for app in live_apps(root).values() for r in app["runners"]}
    retry = sky(root, "apply", "--auto-approve", timeout=180)
    assert retry.returncode == 1, retry.stdout + retry.stderr
    blamed = set(re.findall(r"runner ((?:cold|warm)-[0-9a-f]{8})", retry.stderr))
    assert blamed and not blamed & seen, (retry.stderr, seen)

    # Same code, cause fixed: applying the tainted app again makes it live and clears it.
    marker.write_text("ok")
    marker.chmod(0o644)
    again = sky(root, "apply", "--auto-approve", timeout=180)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "tainted" not in state_of(root)["resources"]["app.warm"]
    assert versions(root, "warm", 5) == ["v3"] * 5
    clean = sky(root, "plan", "--detailed-exitcode")
    assert clean.returncode == 0, clean.stdout + clean.stderr
