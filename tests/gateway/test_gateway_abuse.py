"""The gateway under abuse: poisoned requests, idempotent submits, and every resource limit.

Real gateway processes with limits from SKYFORM_GATEWAY_LIMITS (what `apply`
passes from the stack file), real runners, raw sockets for what no polite
client sends (huge or endless request heads).
"""

from __future__ import annotations

import json
import select
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.gateway import ADMIN, APPS, BUNDLE_KEY, GatewayProc
from support.waiting import wait_for

from skyform.bundle import Bundle, build_bundle

pytestmark = pytest.mark.slow

IDEM = "x-skyform-idempotency-key"
MB = 1000 * 1000
BODY = 60 * MB
HEAD_LIMIT = 64 * 1024
HEAD_TIMEOUT = 2.0
LIMITS = {
    "max_header_bytes": HEAD_LIMIT,
    "header_timeout": HEAD_TIMEOUT,
    "body_timeout": HEAD_TIMEOUT,
    "max_body_bytes": 64 * MB,
    "max_inflight_body_bytes": 100 * MB,
    "max_queued_bytes_per_app": 200 * MB,
    "result_ttl": 2,
}


@pytest.fixture(scope="module")
def abuse_bundles() -> dict[str, Bundle]:
    def build(cls: str, **overrides: Any) -> Bundle:
        return build_bundle(str(APPS / "gw_abuse.py") + "::" + cls, APPS, BUNDLE_KEY, overrides)

    return {"killer": build("Killer"), "sleepy": build("Sleepy")}


@pytest.fixture
def limited(tmp_path: Path, tag: str, count_dir: Path, no_leftovers: None) -> Iterator[GatewayProc]:
    gw = GatewayProc(
        tmp_path / "state", tag, count_dir, env={"SKYFORM_GATEWAY_LIMITS": json.dumps(LIMITS)}
    )
    try:
        yield gw.start()
    finally:
        gw.stop()
        gw.http.close()


# --- at-least-once delivery ------------------------------------------------------


def test_request_that_kills_its_gateway_ends_poisoned(
    gateway: GatewayProc, abuse_bundles, count_dir: Path
) -> None:
    gateway.register("killer", abuse_bundles["killer"])
    submitted = gateway.submit("killer", "/", {"key": "k"})
    counts = count_dir / "k"
    for death in range(1, 4):
        assert gateway.proc is not None
        # In flight (the handler has recorded this attempt): the gateway dies.
        wait_for(
            lambda n=death: counts.exists() and len(counts.read_text().splitlines()) == n,
            90,
            f"attempt {death} to run",
        )
        gateway.proc.send_signal(signal.SIGKILL)
        assert gateway.proc.wait(90) == -signal.SIGKILL
        gateway.stop()
        # The attempt was committed before dispatch: it is counted after the death.
        assert len((count_dir / "k").read_text().splitlines()) == death
        gateway.start()
    status = gateway.wait_done(submitted, timeout=30)
    assert status["error_type"] == "poisoned", status
    assert status["attempts"] == 3 and status["response_status"] == 500
    assert "died 3 times" in status["error"]
    assert gateway.proc is not None and gateway.proc.poll() is None
    assert len((count_dir / "k").read_text().splitlines()) == 3
    result = gateway.http.get(submitted["response_url"])
    assert result.status_code == 500 and result.json()["error_type"] == "poisoned"


def test_idempotency_key_returns_the_first_request_across_restarts(
    gateway: GatewayProc, bundles, count_dir: Path
) -> None:
    gateway.register("echo", bundles["echo_public"])
    key = {IDEM: "order-17"}
    first = gateway.submit("echo", "/status", {"key": "idem"}, headers=key)
    again = gateway.submit("echo", "/status", {"key": "idem"}, headers=key)
    assert again["request_id"] == first["request_id"]
    done = gateway.wait_done(first)
    assert "error" not in done
    gateway.stop()
    gateway.start()
    after_restart = gateway.submit("echo", "/status", {"key": "idem"}, headers=key)
    assert after_restart["request_id"] == first["request_id"]
    assert gateway.http.get(after_restart["response_url"]).json()["calls"] == 1
    assert len((count_dir / "idem").read_text().splitlines()) == 1
    # Another key, or no key, is another request.
    other = gateway.submit("echo", "/status", {"key": "idem"}, headers={IDEM: "order-18"})
    assert other["request_id"] != first["request_id"]
    gateway.wait_done(other)
    for bad in ("", "x" * 300, "caf\u00e9"):
        response = gateway.http.post(
            "/queue/echo/status",
            json={"key": "idem"},
            headers={IDEM: bad.encode("utf-8")},
        )
        assert response.status_code == 400, bad
        assert response.json()["error_type"] == "invalid_idempotency_key"
    assert len((count_dir / "idem").read_text().splitlines()) == 2


# --- limits ----------------------------------------------------------------------


def _rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _post_big(url: str, size: int, out: list[httpx.Response | Exception]) -> None:
    chunk = b"x" * MB

    def body() -> Iterator[bytes]:
        for _ in range(size // MB):
            yield chunk

    try:
        with httpx.Client(timeout=120, trust_env=False) as client:
            out.append(
                client.post(
                    url,
                    content=body(),
                    headers={"content-length": str(size), "content-type": "application/json"},
                )
            )
    except httpx.HTTPError as exc:
        out.append(exc)


def test_concurrent_big_bodies_keep_memory_bounded_and_queues_full_get_429(
    limited: GatewayProc, abuse_bundles
) -> None:
    limited.register("sleepy", abuse_bundles["sleepy"])
    assert limited.proc is not None
    pid = limited.proc.pid
    before = _rss_kib(pid, "VmRSS")
    results: list[httpx.Response | Exception] = []
    threads = [
        threading.Thread(target=_post_big, args=(f"{limited.url}/queue/sleepy/", BODY, results))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    peak = _rss_kib(pid, "VmHWM")
    growth_mb = (peak - before) * 1024 / MB
    print(f"4 concurrent 60 MB bodies: gateway RSS {before // 1024} MiB -> peak {peak // 1024} MiB")
    statuses = sorted(r.status_code for r in results if isinstance(r, httpx.Response))
    print(f"their answers: {statuses}")
    assert len(statuses) == 4, results
    assert set(statuses) <= {202, 503}, statuses
    for r in results:
        assert isinstance(r, httpx.Response)
        if r.status_code == 503:
            assert r.headers["retry-after"] and r.json()["error_type"] == "gateway_busy"
    # One 60 MB body at a time fits the 100 MB in-flight bound: memory holds one
    # body (and SQLite's copy while storing it), never four.
    assert growth_mb < 2 * BODY / MB, f"gateway grew by {growth_mb:.0f} MB"
    accepted = statuses.count(202)
    assert accepted >= 1
    # Queued bytes per app: 200 MB holds three 60 MB bodies; past that, 429.
    answers = []
    for _ in range(5 - accepted):
        out: list[httpx.Response | Exception] = []
        _post_big(f"{limited.url}/queue/sleepy/", BODY, out)
        answers.append(out[0])
    codes = [a.status_code for a in answers if isinstance(a, httpx.Response)]
    assert codes == [202] * (3 - accepted) + [429] * 2, answers
    refused = answers[-1]
    assert isinstance(refused, httpx.Response)
    assert refused.headers["retry-after"] and refused.json()["error_type"] == "queue_full"
    db = limited.state_dir / "gateway.sqlite3"
    grown = _db_bytes(db)
    assert grown > 3 * BODY
    # Finished (here: cancelled) requests give their bodies back, and after
    # result_ttl the rows go too; the file shrinks.
    ids = _open_request_ids(db)
    assert len(ids) == 3
    for request_id in ids:
        assert limited.http.put(f"/queue/sleepy/requests/{request_id}/cancel").status_code == 202
    wait_for(lambda: _db_bytes(db) < 10 * MB, 30, "the database to shrink")
    print(
        f"queue database: {grown / MB:.0f} MB with 3 queued bodies -> {_db_bytes(db) / MB:.1f} MB"
    )
    wait_for(
        lambda: all(
            limited.http.get(f"/queue/sleepy/requests/{i}/status").status_code == 404 for i in ids
        ),
        30,
        "results to expire after result_ttl",
    )
    # Room again: a new body is accepted.
    out = []
    _post_big(f"{limited.url}/queue/sleepy/", BODY, out)
    assert isinstance(out[0], httpx.Response) and out[0].status_code == 202


def _db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in (db, Path(f"{db}-wal")) if p.exists())


def _open_request_ids(db: Path) -> list[str]:
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT id FROM requests WHERE status != 'COMPLETED'").fetchall()
    finally:
        conn.close()
    return [r[0] for r in rows]


def test_body_over_max_is_413_before_it_is_read(limited: GatewayProc, bundles) -> None:
    limited.register("echo", bundles["echo_public"])
    out: list[httpx.Response | Exception] = []
    _post_big(f"{limited.url}/echo/", 65 * MB, out)
    response = out[0]
    assert isinstance(response, httpx.Response), response
    assert response.status_code == 413 and response.json()["error_type"] == "body_too_large"


def _read_answer(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends until it closes (or `timeout` passes)."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], 0.2)
        if ready:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    return data


def test_huge_header_is_431(limited: GatewayProc, bundles) -> None:
    limited.register("echo", bundles["echo_public"])
    assert limited.proc is not None
    before = _rss_kib(limited.proc.pid, "VmRSS")
    with socket.create_connection(("127.0.0.1", limited.port)) as sock:
        sock.sendall(b"POST /echo/ HTTP/1.1\r\nhost: x\r\nx-big: ")
        sent = 0
        answer = b""
        block = b"a" * 65536
        while sent < BODY:
            ready, _, _ = select.select([sock], [], [], 0)
            if ready:
                answer = _read_answer(sock, 5)
                break
            try:
                sock.sendall(block)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(block)
        if not answer:
            answer = _read_answer(sock, 5)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    # Refused at the limit: the rest was dropped as it came, never held.
    grown_mb = (_rss_kib(limited.proc.pid, "VmHWM") - before) * 1024 / MB
    print(f"60 MB header: {sent / MB:.0f} MB sent before the 431; gateway grew {grown_mb:.1f} MB")
    assert grown_mb < 16, f"the gateway grew by {grown_mb:.0f} MB"
    # The gateway still serves everyone else.
    assert limited.http.post("/echo/", json={"text": "ok"}).status_code == 200


def test_slowloris_connections_are_dropped_while_others_are_served(
    limited: GatewayProc, bundles
) -> None:
    limited.register("echo", bundles["echo_public"])
    socks = []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", limited.port))
            s.sendall(b"POST /echo/ HTTP/1.1\r\nhost: x\r\n")
            socks.append(s)
        dropped: set[int] = set()
        answers: dict[int, bytes] = {}
        served = 0

        def trickle() -> bool:
            nonlocal served
            # Normal callers are served meanwhile.
            response = limited.http.post("/echo/", json={"text": "hi"})
            assert response.status_code == 200
            served += 1
            for i, s in enumerate(socks):
                if i in dropped:
                    continue
                try:
                    s.sendall(b"x")
                except OSError:
                    dropped.add(i)
                    continue
                ready, _, _ = select.select([s], [], [], 0)
                if ready:
                    try:
                        chunk = s.recv(65536)
                    except OSError:
                        chunk = b""
                    answers[i] = answers.get(i, b"") + chunk
                    if not chunk:
                        dropped.add(i)
            return len(dropped) == len(socks)

        wait_for(trickle, 60, "the gateway to drop every slow connection")
        assert served >= 2
        timed_out = [a for a in answers.values() if a.startswith(b"HTTP/1.1 408 ")]
        assert len(timed_out) >= len(socks) // 2, f"{len(timed_out)} got a 408"
        assert limited.http.post("/echo/", json={"text": "after"}).status_code == 200
    finally:
        for s in socks:
            s.close()


def test_stalled_body_is_408_and_nothing_is_queued(limited: GatewayProc, bundles) -> None:
    limited.register("echo", bundles["echo_public"])
    with socket.create_connection(("127.0.0.1", limited.port)) as sock:
        sock.sendall(
            b"POST /queue/echo/ HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b'content-length: 1000\r\n\r\n{"text": "'
        )
        answer = _read_answer(sock, 30)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"body stalled" in answer
    assert limited.app("echo")["queue_depth"] == 0
    assert limited.http.post("/echo/", json={"text": "ok"}).status_code == 200


def test_bad_limits_stop_the_gateway_with_one_line(tmp_path: Path, tag: str, count_dir) -> None:
    import subprocess
    import sys

    env_base = {"SKYFORM_ADMIN_TOKEN": "t", "PATH": "/usr/bin:/bin"}
    gateway_cmd = [sys.executable, "-m", "skyform.runtime.gateway"]
    for raw, message in [
        ("{not json", "SKYFORM_GATEWAY_LIMITS is not valid JSON"),
        ('{"max_body_byte": 1}', "unknown gateway limit 'max_body_byte' (did you mean"),
        ('{"header_timeout": -1}', "header_timeout must be a positive number"),
        ('{"poison_after_deaths": 1.5}', "poison_after_deaths must be a positive integer"),
    ]:
        proc = subprocess.run(
            [*gateway_cmd, "--port", "1", "--state-dir", str(tmp_path / "s")],
            env={**env_base, "SKYFORM_GATEWAY_LIMITS": raw},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 1, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and message in last, proc.stderr
        assert "Traceback" not in proc.stderr


def test_an_app_stored_under_a_broken_name_can_still_be_removed(
    gateway: GatewayProc, bundles
) -> None:
    """A name an older gateway accepted ("pwn\\n") is listed and removed, never a traceback."""
    import sqlite3

    from skyform.engine.admin_client import GatewayClient

    gateway.register("echo", bundles["echo_public"])
    refused = gateway.admin("PUT", "/-/apps/pwn%0A", json={"bundle_b64": "x"})
    assert refused.status_code == 400 and refused.json()["error_type"] == "invalid_app_name"
    gateway.stop()
    db = sqlite3.connect(gateway.state_dir / "gateway.sqlite3")
    with db:
        db.execute("UPDATE apps SET name = ? WHERE name = 'echo'", ("pwn\n",))
    db.close()
    gateway.start()
    with GatewayClient(gateway.url, ADMIN) as client:
        assert list(client.list_apps()) == ["pwn\n"]
        client.delete_app("pwn\n")
        assert client.list_apps() == {}
