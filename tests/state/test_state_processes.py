"""Locks and crash safety with real concurrent processes, on both backends."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable

import pytest
from support.stored import Worker, stored_text

from skyform.state import StateBackend, StateError, StateLockedError
from skyform.state.local import LocalBackend

pytestmark = pytest.mark.slow

Make = Callable[[], StateBackend]
Spawn = Callable[..., Worker]


def test_second_process_is_refused_with_the_holders_info(make_backend: Make, spawn: Spawn) -> None:
    holder = spawn("hold", "apply")
    info = holder.line()["locked"]
    rc, out, _ = spawn("try", "0").finish()
    assert rc == 3
    for part in (info["id"], "'apply'", info["who"], info["created"]):
        assert part in out
    backend = make_backend()
    assert backend.current_lock().id == info["id"]
    with pytest.raises(StateLockedError) as err:
        backend.write(backend.read().evolve(outputs={"x": 1}))
    assert info["id"] in str(err.value)
    assert stored_text(backend) is None
    holder.tell()
    assert holder.line() == {"released": True}


def test_sigkilled_holder_leaves_no_lock(make_backend: Make, spawn: Spawn) -> None:
    holder = spawn("hold", "apply")
    info = holder.line()["locked"]
    holder.proc.kill()
    holder.proc.wait(timeout=30)
    backend = make_backend()
    if isinstance(backend, LocalBackend):
        assert backend.info_path.exists()  # the label of the dead holder is still there ...
        assert backend.current_lock() is None  # ... but the kernel dropped its flock
        timeout = 0.0
    else:
        timeout = 15.0  # the server notices the dropped connection, then frees the lock
    with backend.lock(operation="apply", timeout=timeout) as mine:
        assert mine.id != info["id"]
        assert make_backend().current_lock() == mine


def test_a_child_that_outlives_the_holder_does_not_keep_the_lock(
    make_backend: Make, spawn: Spawn
) -> None:
    holder = spawn("hold-spawn")
    started = holder.line()
    child = started["child"]
    try:
        holder.proc.kill()
        holder.proc.wait(timeout=30)
        os.kill(child, 0)  # the child still runs ...
        backend = make_backend()
        timeout = 0.0 if isinstance(backend, LocalBackend) else 15.0
        with backend.lock(timeout=timeout) as mine:  # ... and the lock is free
            assert mine.id != started["locked"]["id"]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(child, 0)


def test_sigint_holder_releases_its_lock(make_backend: Make, spawn: Spawn) -> None:
    holder = spawn("hold", "apply")
    holder.line()
    holder.proc.send_signal(signal.SIGINT)
    holder.proc.wait(timeout=30)
    backend = make_backend()
    assert backend.current_lock() is None
    if isinstance(backend, LocalBackend):
        assert not backend.info_path.exists()
    with backend.lock(timeout=0):
        pass


def test_lock_timeout_waits_for_the_holder(make_backend: Make, spawn: Spawn) -> None:
    holder = spawn("hold", "apply")
    holder.line()
    releaser = threading.Timer(0.8, holder.tell)
    releaser.start()
    try:
        backend = make_backend()
        with backend.lock(operation="plan", timeout=60) as info:
            assert backend.current_lock() == info
    finally:
        releaser.cancel()
    assert holder.line() == {"released": True}


def test_lock_timeout_expires_naming_the_holder(make_backend: Make, spawn: Spawn) -> None:
    holder = spawn("hold", "destroy")
    info = holder.line()["locked"]
    started = time.monotonic()
    with (
        pytest.raises(StateLockedError, match=r"after waiting 0\.6s") as err,
        make_backend().lock(timeout=0.6),
    ):
        pass
    assert time.monotonic() - started >= 0.6
    assert err.value.info is not None and err.value.info.id == info["id"]
    assert "'destroy'" in str(err.value)


def test_concurrent_writers_lose_no_update(make_backend: Make, spawn: Spawn) -> None:
    writers = [spawn("writers", "6", f"w{n}") for n in range(4)]
    for worker in writers:
        rc, _, err = worker.finish(timeout=120)
        assert rc == 0, err
    doc = make_backend().read()
    assert len(doc.resources) == 24
    assert doc.serial == 24
    assert {r["writer"] for r in doc.resources.values()} == {"w0", "w1", "w2", "w3"}


def test_writer_killed_mid_write_leaves_a_whole_state(make_backend: Make, spawn: Spawn) -> None:
    backend = make_backend()
    serials = []
    for delay in (0.15, 0.35, 0.6):
        writer = spawn("spin", "400")
        writer.line()
        time.sleep(delay)
        writer.proc.kill()
        writer.proc.wait(timeout=30)
        try:
            doc = backend.read()
        except StateError as exc:  # pragma: no cover - that is the failure being tested for
            pytest.fail(f"state damaged by a killed writer: {exc}")
        serials.append(doc.serial)
        if doc.serial:
            assert len(doc.resources) == 400
            assert {r["round"] for r in doc.resources.values()} == {doc.outputs["round"]}
        if isinstance(backend, LocalBackend) and backend.backup_path.exists():
            previous = LocalBackend(backend.directory, backend.stack)
            previous.path = backend.backup_path
            assert previous.read().serial in (doc.serial - 1, doc.serial)
    assert serials[-1] > 0, "the writer never wrote: the test proved nothing"
    # the next write, under the lock, sweeps temp files a killed writer left
    with backend.lock():
        backend.write(backend.read().evolve(outputs={"after": True}))
    if isinstance(backend, LocalBackend):
        assert list(backend.directory.glob("*.tmp")) == []
        assert list(backend.directory.glob(".*.tmp")) == []
