"""Durability (SIGKILL + restart), graceful stop, and rolling revisions."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import pytest
from support.gateway import APPS, BUNDLE_KEY, GatewayProc
from support.procs import pid_alive, tagged_pids
from support.waiting import wait_for

from skyform.bundle import build_bundle

pytestmark = pytest.mark.slow


def test_sigkill_loses_no_accepted_request(
    gateway: GatewayProc, bundles, tag: str, tmp_path: Path
) -> None:
    gateway.register("echo", bundles["echo_public"])
    done = [gateway.submit("echo", "/", {"text": f"done{i}"}) for i in range(5)]
    results = {d["request_id"]: gateway.wait_done(d) for d in done}
    assert all("error" not in s for s in results.values())
    queued = [gateway.submit("echo", "/status", {"key": f"q{i}", "sleep": 0.2}) for i in range(20)]
    runner_pids = [r["pid"] for r in gateway.runners("echo", ("starting", "ready"))]
    assert gateway.http.get(queued[-1]["status_url"]).json()["status"] == "IN_QUEUE"
    gateway.stop(signal.SIGKILL)
    # The runners die with their gateway (PR_SET_PDEATHSIG), even on SIGKILL.
    wait_for(lambda: not any(pid_alive(p) for p in runner_pids), 15, "orphaned runners to stop")
    assert not tagged_pids(tag)

    restarted = GatewayProc(gateway.state_dir, tag, gateway.count_dir, port=gateway.port)
    restarted.start()
    try:
        assert "echo" in [a["name"] for a in restarted.admin("GET", "/-/apps").json()["apps"]]
        for q in queued:
            status = restarted.wait_done(q, timeout=90)
            assert "error" not in status, status
            assert restarted.http.get(q["response_url"]).status_code == 200
        for d in done:
            result = restarted.http.get(d["response_url"])
            assert result.status_code == 200 and result.json()["echo"].startswith("done")
    finally:
        restarted.stop()
        restarted.http.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_stops_every_runner_and_keeps_the_queue(
    gateway: GatewayProc, bundles, sig: int
) -> None:
    gateway.register("echo", bundles["echo_public"])
    assert gateway.http.post("/echo/", json={"text": "x"}).status_code == 200
    pids = [r["pid"] for r in gateway.runners("echo")]
    assert pids
    assert gateway.stop(sig) == 0
    assert not any(pid_alive(p) for p in pids)
    # The queue (and the apps' env, secrets included) is kept, readable by its owner only.
    assert (gateway.state_dir / "gateway.sqlite3").stat().st_mode & 0o777 == 0o600


def test_new_revision_rolls_without_failures(gateway: GatewayProc, bundles) -> None:
    gateway.register("echo", bundles["echo"], auth="public")
    first = gateway.http.get("/echo/version").json()
    assert first["version"] == 1
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            r = gateway.http.get("/echo/version")
            seen.append((r.status_code, r.json().get("version", 0)))

    thread = threading.Thread(target=stream)
    thread.start()
    try:
        time.sleep(0.3)
        body = gateway.register("echo", bundles["v2"], auth="public").json()
        assert body["revision"] == bundles["v2"].revision
        wait_for(lambda: seen and seen[-1][1] == 2, 30, "version 2 to answer")
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(30)
    assert all(code == 200 for code, _ in seen), [s for s in seen if s[0] != 200]
    versions = [v for _, v in seen]
    assert versions[0] == 1 and versions[-1] == 2
    assert versions == sorted(versions)  # once v2 answers, v1 never does again
    wait_for(lambda: not pid_alive(first["pid"]), 20, "the old runner to drain and stop")
    revisions = {r["revision"] for r in gateway.runners("echo")}
    assert revisions == {bundles["v2"].revision}


def test_options_update_in_place_and_env_change_rolls(gateway: GatewayProc, bundles) -> None:
    ref = str(APPS / "gw_echo_v2.py") + "::EchoV2"
    gateway.register("echo", bundles["v2"], env={"GREETING": "hi"})
    before = gateway.http.get("/echo/version").json()
    assert before["greeting"] == "hi"
    more = build_bundle(ref, APPS, BUNDLE_KEY, {"max_runners": 3})
    assert more.revision == bundles["v2"].revision and more.fingerprint != bundles["v2"].fingerprint
    gateway.register("echo", more, env={"GREETING": "hi"})
    app = gateway.app("echo")
    assert app["options"]["max_runners"] == 3 and app["fingerprint"] == more.fingerprint
    assert gateway.http.get("/echo/version").json()["pid"] == before["pid"]  # no restart
    gateway.register("echo", more, env={"GREETING": "bye"})
    wait_for(
        lambda: gateway.http.get("/echo/version").json()["greeting"] == "bye", 30, "the env roll"
    )
    after = gateway.http.get("/echo/version").json()
    assert after["pid"] != before["pid"]
