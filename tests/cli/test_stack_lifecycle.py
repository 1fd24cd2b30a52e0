"""The whole loop on the local provider: apply, call, plan clean, change, drift, interrupt, destroy.

One real stack is applied once for the module (a real gateway daemon, real
runners, real HTTP); tests run in order and each leaves it applied, the last
destroys it. Every process the stack starts is checked for at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.cli import cleanup, keys_of, set_apps, sky, start_sky, state_of, write_project
from support.procs import kill_all_under, pid_alive, port_free, processes_under
from support.waiting import wait_for, wait_until

pytestmark = pytest.mark.slow

SECRET = "tok-5ecret-value-0042"

APPS = {
    "hello": {
        "app": "app.py::Hello",
        "min_runners": 1,
        "env": {"GREETING": "Hi"},
        "secrets": ["TOKEN_X"],
    },
    "other": {"app": "other.py::Other"},
}


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = write_project(tmp_path_factory.mktemp("stack") / "proj", APPS)
    os.environ["TOKEN_X"] = SECRET  # read from the environment at apply, like a CI secret
    try:
        proc = sky(root, "apply", "--auto-approve")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        root.joinpath("first-apply.txt").write_text(proc.stdout + proc.stderr)
        yield root
    finally:
        os.environ.pop("TOKEN_X", None)
        cleanup(root)


def gateway_url(root: Path) -> str:
    return state_of(root)["outputs"]["gateway_url"]


def gateway_pid(root: Path) -> int:
    return int(state_of(root)["resources"]["gateway"]["handle"]["info"]["pid"])


def plan_exit(root: Path, *args: str) -> int:
    return sky(root, "plan", "--detailed-exitcode", *args).returncode


def unaccounted(root: Path) -> list[str]:
    """Processes of the stack that are neither the recorded gateway nor one of its runners."""
    gw = gateway_pid(root)
    out = [] if pid_alive(gw) else [f"recorded gateway {gw} is not running"]
    for pid, cmd in processes_under(root):
        if pid == gw:
            continue
        try:
            ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
        if ppid != gw or "skyform.runtime.runner" not in cmd:
            out.append(f"{pid}: {cmd}")
    return out


def assert_all_accounted_for(root: Path) -> None:
    # A dead gateway's runners get SIGTERM from the kernel; give them their grace to exit.
    wait_until(lambda: not unaccounted(root), timeout=30)
    assert unaccounted(root) == []


def test_apply_prints_outputs_and_the_app_answers(root: Path) -> None:
    first = root.joinpath("first-apply.txt").read_text()
    base = gateway_url(root)
    assert "Apply complete! Resources: 3 added, 0 changed, 0 destroyed." in first
    assert f"url            = {base}/hello/" in first
    assert f"playground_url = {base}/hello/playground" in first
    assert "app.hello: 1/1 runners ready" in first  # waited for min_runners
    out = json.loads(sky(root, "output", "--json").stdout)
    assert out == {
        "gateway_url": base,
        "apps": {
            name: {
                "url": f"{base}/{name}/",
                "queue_url": f"{base}/queue/{name}/",
                "playground_url": f"{base}/{name}/playground",
            }
            for name in ("hello", "other")
        },
    }
    key = keys_of(root)["api_key"]
    answer = httpx.post(
        f"{base}/hello/",
        json={"name": "Ada"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["message"] == "Hi, Ada!"  # env from the stack file, helper module by value
    assert answer.json()["token"] == SECRET  # the secret reached the runner...
    assert httpx.post(f"{base}/hello/", json={}, timeout=30).status_code == 401  # private
    assert httpx.get(f"{base}/hello/playground", timeout=30).status_code == 200
    # The state keeps names and hashes, never key material.
    text = (root / ".skyform" / "demo.state.json").read_text()
    assert key not in text and keys_of(root)["admin_token"] not in text
    assert SECRET not in text and SECRET not in first  # ...but never the state or the plan
    assert "secrets_digest   = (sensitive value)" in first


def test_no_perpetual_diff_fresh_process_and_copied_project(root: Path, tmp_path: Path) -> None:
    assert plan_exit(root) == 0
    proc = sky(root, "plan")
    assert proc.stdout.strip() == "No changes. Your stack matches the configuration."
    copy = tmp_path / "elsewhere" / "checkout"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("runtime"))
    proc = sky(copy, "plan", "--detailed-exitcode", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["changes"] is False
    # A checkout with other keys must not mistake the live gateway for a dead one.
    (copy / ".skyform" / "demo.keys.json").unlink()
    proc = sky(copy, "plan")
    assert proc.returncode == 1
    assert "refuses this stack's admin token" in proc.stderr


def test_status_and_logs(root: Path) -> None:
    status = json.loads(sky(root, "status", "--json").stdout)
    assert status["gateway"]["alive"] is True
    apps = {a["name"]: a for a in status["apps"]}
    assert set(apps) == {"hello", "other"}
    hello = apps["hello"]
    revision = state_of(root)["resources"]["app.hello"]["revision"]
    assert hello["revision"] == revision
    assert any(r["state"] == "ready" and r["revision"] == revision for r in hello["runners"])
    assert hello["url"] == f"{gateway_url(root)}/hello/"
    human = sky(root, "status").stdout
    assert "hello" in human and revision[:12] in human and "1 ready" in human
    logs = sky(root, "logs", "hello")
    assert logs.returncode == 0, logs.stderr
    assert "ready" in logs.stdout
    bad = sky(root, "logs", "helo")
    assert bad.returncode == 1
    assert 'no app "helo"' in bad.stderr and 'did you mean "hello"' in bad.stderr


def test_in_place_update_then_clean(root: Path) -> None:
    before_pid = gateway_pid(root)
    set_apps(root, {**APPS, "other": {"app": "other.py::Other", "max_runners": 3}})
    proc = sky(root, "plan", "--detailed-exitcode")
    assert proc.returncode == 2
    assert "~ max_runners = 2 -> 3" in proc.stdout
    assert "Plan: 0 to add, 1 to change, 0 to destroy." in proc.stdout
    proc = sky(root, "apply", "--auto-approve")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Resources: 0 added, 1 changed, 0 destroyed." in proc.stdout
    assert plan_exit(root) == 0
    assert gateway_pid(root) == before_pid  # the gateway was not touched
    rotated = sky(root, "plan", "--detailed-exitcode", env={"TOKEN_X": SECRET + "-rotated"})
    assert rotated.returncode == 2
    assert "~ secrets_digest = (sensitive value) -> (sensitive value)" in rotated.stdout
    assert SECRET not in rotated.stdout


def test_apply_without_terminal_refuses_and_changes_nothing(root: Path) -> None:
    set_apps(root, {**APPS, "other": {"app": "other.py::Other", "max_runners": 4}})
    serial = state_of(root)["serial"]
    proc = sky(root, "apply")
    assert proc.returncode == 1
    assert "needs confirmation but there is no terminal" in proc.stderr
    assert "--auto-approve" in proc.stderr
    assert state_of(root)["serial"] == serial
    assert plan_exit(root) == 2


def test_saved_plan_applies_exactly_and_then_is_stale(root: Path, tmp_path: Path) -> None:
    plan_file = tmp_path / "change.plan"
    proc = sky(root, "plan", "--out", str(plan_file))
    assert proc.returncode == 0 and plan_file.exists()
    # Editing the stack file after planning does not change what the plan applies.
    set_apps(root, {**APPS, "other": {"app": "other.py::Other", "max_runners": 7}})
    proc = sky(root, "apply", str(plan_file))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert state_of(root)["resources"]["app.other"]["max_runners"] == 4
    again = sky(root, "apply", str(plan_file))
    assert again.returncode == 1
    assert "is stale: it was made at state serial" in again.stderr
    set_apps(root, {**APPS, "other": {"app": "other.py::Other", "max_runners": 4}})
    assert plan_exit(root) == 0


def test_concurrent_apply_fails_naming_the_holder_or_waits(root: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from skyform.state import open_backend\n"
            "b = open_backend('local', stack='demo', workdir=sys.argv[1])\n"
            "with b.lock(operation='apply'):\n"
            "    print('locked', flush=True)\n"
            "    time.sleep(float(sys.argv[2]))\n",
            str(root),
            "4",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        proc = sky(root, "apply", "--auto-approve")
        assert proc.returncode == 1
        assert "is locked" in proc.stderr and "'apply'" in proc.stderr
        assert f"(pid {holder.pid})" in proc.stderr and "--lock-timeout" in proc.stderr
        waited = sky(root, "apply", "--auto-approve", "--lock-timeout", "60")
        assert waited.returncode == 0, waited.stderr
        assert holder.wait(timeout=30) == 0
    finally:
        holder.kill()
        holder.wait()


def test_drift_killed_gateway_is_planned_and_repaired(root: Path) -> None:
    old = gateway_pid(root)
    os.kill(old, signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(old))
    proc = sky(root, "plan", "--detailed-exitcode")
    assert proc.returncode == 2
    assert "Note: Objects have changed outside of skyform" in proc.stdout
    assert "# gateway will be created" in proc.stdout
    assert "# app.hello will be created (the gateway is created again)" in proc.stdout
    proc = sky(root, "apply", "--auto-approve")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert plan_exit(root) == 0
    assert gateway_pid(root) != old
    assert_all_accounted_for(root)  # the old gateway's runners died with it


def _pending(root: Path) -> bool:
    """Whether the stored state holds a change an apply has started and not finished."""
    return any("pending" in record for record in state_of(root).get("resources", {}).values())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_apply_converges(root: Path, sig: signal.Signals) -> None:
    # A code change: a new revision to roll out, and the gateway replaced too.
    (root / "greeting.py").write_text((root / "greeting.py").read_text() + f"\n# {sig.name}\n")
    proc = start_sky(root, "apply", "--auto-approve", "--replace", "gateway")
    try:
        # Interrupt mid-way, at an observable point: the apply has recorded a pending
        # change and its provider call is in flight (no random or fixed sleep).
        wait_for(lambda: _pending(root) or proc.poll() is not None, 120, "a pending change")
        assert proc.poll() is None, "the apply finished before it recorded a pending change"
        proc.send_signal(sig)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stdout is not None
    proc.stdout.close()
    fixed = sky(root, "apply", "--auto-approve", "--lock-timeout", "10")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert plan_exit(root) == 0
    assert_all_accounted_for(root)
    assert all("pending" not in r for r in state_of(root)["resources"].values())


def test_pending_change_that_is_live_is_settled_by_the_next_apply(root: Path) -> None:
    # What a kill leaves when it lands after the gateway took the change but before
    # the state recorded it: pending markers on records whose change is live.
    path = root / ".skyform" / "demo.state.json"
    doc = json.loads(path.read_text())
    app = next(a for a in doc["resources"] if a.startswith("app."))
    doc["resources"][app]["pending"] = {"operation": "update"}
    doc["resources"]["gateway"]["pending"] = {"operation": "delete"}
    path.write_text(json.dumps(doc))
    plan = sky(root, "plan", "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout + plan.stderr  # nothing to change...
    assert "an interrupted update is reconciled" in plan.stdout  # ...but drift to settle
    before = gateway_pid(root)
    proc = sky(root, "apply", "--auto-approve")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 added, 0 changed, 0 destroyed" in proc.stdout
    resources = state_of(root)["resources"]
    assert [a for a, r in resources.items() if "pending" in r] == []
    assert gateway_pid(root) == before  # settled, not restarted
    assert "reconciled" not in sky(root, "plan").stdout
    assert_all_accounted_for(root)


def test_stray_app_registered_by_hand_is_removed_by_apply(root: Path) -> None:
    from skyform.bundle import build_bundle
    from skyform.engine.admin_client import GatewayClient

    keys = keys_of(root)
    bundle = build_bundle(str(root / "other.py") + "::Other", root, keys["bundle_key"])
    with GatewayClient(gateway_url(root), keys["admin_token"]) as client:
        client.put_app("stray", bundle.data, "public", {})
        assert "stray" in client.list_apps()
    plan = sky(root, "plan", "--detailed-exitcode")
    assert plan.returncode == 2, plan.stdout + plan.stderr
    assert "app.stray" in plan.stdout and "registered at the gateway but not in the state" in (
        plan.stdout
    )
    proc = sky(root, "apply", "--auto-approve")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    with GatewayClient(gateway_url(root), keys["admin_token"]) as client:
        assert "stray" not in client.list_apps()
    assert plan_exit(root) == 0
    assert_all_accounted_for(root)


def test_gateway_limits_from_the_stack_file_reach_the_gateway(root: Path) -> None:
    stack_file = root / "skyform.yaml"
    text = stack_file.read_text()
    assert "gateway: {port: " in text
    stack_file.write_text(
        text.replace("gateway: {port: ", "gateway: {limits: {max_body_bytes: 1KiB}, port: ")
    )
    plan = sky(root, "plan")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "# gateway must be replaced" in plan.stdout and "max_body_bytes" in plan.stdout, (
        plan.stdout
    )
    proc = sky(root, "apply", "--auto-approve")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    key = keys_of(root)["api_key"]
    headers = {"Authorization": f"Bearer {key}"}
    big = httpx.post(
        f"{gateway_url(root)}/hello/", json={"name": "x" * 2048}, headers=headers, timeout=60
    )
    assert big.status_code == 413 and "1024 bytes" in big.json()["detail"], big.text
    small = httpx.post(f"{gateway_url(root)}/hello/", json={"name": "Ada"}, headers=headers)
    assert small.status_code == 200, small.text
    assert plan_exit(root) == 0
    assert_all_accounted_for(root)


def test_destroy_stops_everything_and_is_idempotent(root: Path) -> None:
    port = int(state_of(root)["resources"]["gateway"]["port"])
    proc = sky(root, "destroy", "--auto-approve")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Destroy complete! Resources: 3 destroyed." in proc.stdout
    assert wait_until(lambda: not processes_under(root), timeout=30), processes_under(root)
    state = state_of(root)
    assert state["resources"] == {} and state["outputs"] == {}
    assert wait_until(lambda: port_free(port))
    again = sky(root, "destroy", "--auto-approve")
    assert again.returncode == 0
    assert "No changes. No objects need to be destroyed." in again.stdout
    assert state_of(root)["serial"] == state["serial"]
    kill_all_under(root)
