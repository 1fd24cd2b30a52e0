"""Isolation, tested from inside an app, the way the security review found the holes.

One real stack (`pub`: public, `priv`: private with `secrets: [MY_SECRET]`) is
applied from a shell that also holds an unrelated CI credential. The probe app
(`apps/probe.py`) reports whatever it can read; these tests assert it gets
nothing it should not. Then: no file under `.skyform/` (nor the saved plan)
holds the secret, a SIGKILLed gateway restarted by the repair `apply` still
serves with the secret and finishes its queued requests, `.skyform/` is
owner-only, and `destroy` stops what an endpoint spawned and removes the queue.
"""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path

import httpx
import pytest
from support.cli import cleanup, keys_of, sky, state_of
from support.isolation import (
    CI_CREDENTIAL,
    MY_SECRET,
    admin,
    call,
    deployer_env,
    dump,
    forbidden,
    gateway_url,
    leaks,
    runner_urls,
    write_probe_project,
)
from support.procs import pid_alive, processes_under
from support.waiting import wait_until

pytestmark = pytest.mark.slow

AS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = write_probe_project(tmp_path_factory.mktemp("iso") / "proj")
    try:
        plan = sky(root, "plan", "--out", "plan.bin", env=deployer_env())
        assert plan.returncode == 0, plan.stdout + plan.stderr
        applied = sky(root, "apply", "--auto-approve", env=deployer_env(), timeout=300)
        assert applied.returncode == 0, applied.stdout + applied.stderr
        yield root
    finally:
        cleanup(root)


def _probe(root: Path, app: str) -> dict:
    body = {
        "skyform_dir": str(root / ".skyform"),
        "runner_urls": runner_urls(root, "priv"),
        "gateway_url": gateway_url(root),
    }
    return call(root, app, "/probe", body)


def test_a_public_app_finds_no_key_token_or_other_secret(root: Path) -> None:
    seen = _probe(root, "pub")
    # Its environment is its own: no stack key, no deployer variable, no other app's secret.
    assert "CI_CREDENTIAL" not in seen["environ"] and "MY_SECRET" not in seen["environ"]
    assert not [n for n in seen["environ"] if n.startswith("SKYFORM_") and n != "SKYFORM_APP_NAME"]
    # Nothing it can read anywhere holds a key, a token or a secret value.
    assert leaks(dump(seen), forbidden(root)) == []
    # No credential it found opens priv's runner or the gateway's admin API.
    assert seen["candidates"] > 0, "the probe found its own runner's token at least"
    for url, statuses in seen["runner_calls"].items():
        assert statuses == [401], f"{url} answered {statuses}"
    assert seen["runner_calls"], "priv has a runner to attack"
    assert seen["admin_calls"] == [401]


@pytest.mark.skipif(not AS_ROOT, reason="runners drop privileges only when skyform runs as root")
def test_runners_run_unprivileged_and_cannot_read_the_stack_files(root: Path) -> None:
    seen = _probe(root, "pub")
    assert seen["uid"] != 0
    assert seen["files"] == {str(root / ".skyform"): "<PermissionError>"}
    assert seen["parent_environ"] == "<PermissionError>"  # the gateway is not dumpable
    assert seen["parent_mem"] == "<PermissionError>"


def test_a_private_app_has_its_secret_in_memory_only(root: Path) -> None:
    got = call(root, "priv", "/secret")
    assert got["sha256"] == sha256(MY_SECRET.encode()).hexdigest()
    assert got["in_proc_environ"] is False
    seen = _probe(root, "priv")
    assert seen["environ"]["MY_SECRET"] == MY_SECRET
    # Its start-up environment (read as root in the next test) does not hold it; the
    # runner is non-dumpable, so even the app cannot open its own /proc/self/environ.
    assert seen["own_proc_environ"] == "<PermissionError>"
    rest = {k: v for k, v in forbidden(root).items() if k != "MY_SECRET"}
    assert leaks(dump({**seen, "environ": {}}), {**rest, "MY_SECRET": MY_SECRET}) == []
    assert leaks(dump(seen["environ"]), rest) == []


def test_no_process_environ_holds_a_credential(root: Path) -> None:
    """Read as root, every process of the stack: gateway, runners (installers are checked
    in test_installer_lifetime)."""
    values = forbidden(root)
    found = processes_under(root)
    pids = {pid for pid, _cmd in found}
    with admin(root) as client:
        pids |= {r["pid"] for r in client.get("/-/runners").json()["runners"] if r["pid"]}
    assert len(pids) >= 3, found
    for pid in pids:
        environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
        assert leaks(environ, values) == [], pid


def _scan(paths: list[Path]) -> list[str]:
    """Files among `paths` (walked) whose bytes contain the secret."""
    hits = []
    for top in paths:
        for path in [top, *top.rglob("*")] if top.is_dir() else [top]:
            if path.is_file() and MY_SECRET.encode() in path.read_bytes():
                hits.append(str(path))
    return hits


def test_no_file_holds_the_secret_and_a_killed_gateway_recovers(root: Path) -> None:
    plan_file = root / "plan.bin"
    assert plan_file.exists()
    # Queue work that will still be waiting when the gateway dies.
    key = keys_of(root, "iso")["api_key"]
    headers = {"Authorization": f"Bearer {key}"}
    base = gateway_url(root)
    submitted = []
    for _ in range(3):
        response = httpx.post(
            f"{base}/queue/priv/slow", json={"seconds": 1}, headers=headers, trust_env=False
        )
        assert response.status_code == 202, response.text
        submitted.append(response.json())
    gateway = int(state_of(root, "iso")["resources"]["gateway"]["handle"]["info"]["pid"])
    os.kill(gateway, signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(gateway), 10)
    assert _scan([root / ".skyform", plan_file]) == []

    repaired = sky(root, "apply", "--auto-approve", env=deployer_env(), timeout=300)
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    digest = sha256(MY_SECRET.encode()).hexdigest()
    for item in submitted:

        def done(item: dict = item) -> dict | None:
            status = httpx.get(item["status_url"], headers=headers, trust_env=False).json()
            return status if status["status"] == "COMPLETED" else None

        assert wait_until(done, 120), item
        result = httpx.get(item["response_url"], headers=headers, trust_env=False)
        assert result.status_code == 200 and result.json()["sha256"] == digest
    assert call(root, "priv", "/secret")["sha256"] == digest
    assert _scan([root / ".skyform", plan_file]) == []


def test_stack_files_are_owner_only(root: Path) -> None:
    loose = []
    for path in [root / ".skyform", *(root / ".skyform").rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        want = 0o700 if path.is_dir() else 0o600
        if path.is_symlink() or mode & 0o077 or (path.is_dir() and mode != want):
            loose.append(f"{path} {mode:04o}")
    assert loose == []


def test_destroy_stops_what_an_endpoint_spawned_and_removes_the_queue(root: Path) -> None:
    child = call(root, "pub", "/spawn", {"seconds": 600})["pid"]
    assert pid_alive(child)
    queue = root / ".skyform" / "runtime" / "iso" / "gateway" / "gateway.sqlite3"
    assert queue.exists()
    kept = sky(root, "destroy", "--auto-approve", "--keep-queue", timeout=120)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert wait_until(lambda: not pid_alive(child), 15), "the endpoint's child outlived destroy"
    assert queue.exists(), "--keep-queue keeps the queue database"
    assert processes_under(root) == []
    again = sky(root, "destroy", "--auto-approve", timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert not queue.exists() and not queue.with_name("gateway.sqlite3-wal").exists()
    assert CI_CREDENTIAL not in (again.stdout + again.stderr)
