"""What only the local backend does: its files, its backup, its flock and stale lock labels."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from support.stored import Worker

from skyform.state import StateDocument, StateError, open_backend
from skyform.state.local import LocalBackend


def _local(tmp_path: Path, stack: str = "demo") -> LocalBackend:
    backend = open_backend("local", stack, tmp_path)
    assert isinstance(backend, LocalBackend)
    return backend


def test_files_backup_and_no_leftovers(tmp_path: Path) -> None:
    backend = _local(tmp_path)
    with backend.lock():
        first = backend.write(backend.read().evolve(resources={"gateway": {"port": 1}}))
        assert not backend.backup_path.exists()  # nothing to back up on the first write
        second = backend.write(first.evolve(resources={"gateway": {"port": 2}}))
        assert backend.info_path.exists()
    state_dir = tmp_path / ".skyform"
    assert sorted(p.name for p in state_dir.iterdir()) == [
        "demo.state.json",
        "demo.state.json.backup",
        "demo.state.lock",
    ]
    assert StateDocument.from_json(backend.path.read_text()) == second
    assert StateDocument.from_json(backend.backup_path.read_text()) == first
    assert backend.path.read_text().startswith('{\n  "version": 1,')
    # a backup is its own file: the next write does not change it in place
    assert os.stat(backend.path).st_ino != os.stat(backend.backup_path).st_ino


def test_unchanged_write_touches_no_file(tmp_path: Path) -> None:
    backend = _local(tmp_path)
    stored = backend.write(backend.read().evolve(outputs={"a": 1}))
    before = os.stat(backend.path)
    assert backend.write(stored.evolve(outputs={"a": 1})) == stored
    after = os.stat(backend.path)
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert not backend.backup_path.exists()


def test_state_of_another_stack_in_the_file_is_refused(tmp_path: Path) -> None:
    backend = _local(tmp_path)
    backend.path.parent.mkdir(parents=True)
    backend.path.write_text(StateDocument.new("other").to_json())
    with pytest.raises(StateError, match="holds stack 'other', not 'demo'"):
        backend.read()


def test_corrupt_file_error_points_at_the_backup(tmp_path: Path) -> None:
    backend = _local(tmp_path)
    doc = backend.write(backend.read())
    backend.write(doc.evolve(outputs={"x": 1}))
    backend.path.write_text("{trunc")
    with pytest.raises(StateError) as err:
        backend.read()
    message = str(err.value)
    assert str(backend.path) in message and "demo.state.json.backup" in message
    assert "left untouched" in message


def test_unlock_clears_a_dead_holders_label_but_not_a_live_one(tmp_path: Path) -> None:
    backend = _local(tmp_path)
    holder = Worker.start("hold", "local", "demo", tmp_path, "apply")
    try:
        info = holder.line()["locked"]
        with pytest.raises(StateError) as err:
            backend.force_unlock(info["id"])
        assert f"pid {info['pid']}" in str(err.value) and "stop it" in str(err.value)
        assert backend.current_lock().id == info["id"]
        holder.proc.kill()
        holder.proc.wait(timeout=30)
        label = json.loads(backend.info_path.read_text())
        assert label["id"] == info["id"]  # a dead holder's label is left ...
        with pytest.raises(StateError, match="it is not locked"):
            backend.force_unlock("some-other-id")
        assert backend.force_unlock(info["id"]).id == info["id"]  # ... and can be cleared
        assert not backend.info_path.exists()
    finally:
        holder.stop()


def test_garbage_lock_label_does_not_block(tmp_path: Path) -> None:
    backend = _local(tmp_path)
    backend.info_path.parent.mkdir(parents=True)
    backend.info_path.write_text("not json")
    assert backend.current_lock() is None
    with backend.lock() as info:
        assert json.loads(backend.info_path.read_text())["id"] == info.id


def test_leftovers_of_a_writer_killed_at_each_step_are_harmless(tmp_path: Path) -> None:
    backend = _local(tmp_path)
    doc = backend.write(backend.read().evolve(outputs={"n": 1}))
    doc = backend.write(doc.evolve(outputs={"n": 2}))
    # killed after writing its temp file, before the rename: the state is the old one
    half = backend.directory / f".{backend.path.name}.0123456789ab.tmp"
    half.write_text('{"version": 1, "lineage": "half-writ')
    assert backend.read() == doc
    # killed after keeping the backup, before replacing the state: both are one file
    backend.backup_path.unlink()
    os.link(backend.path, backend.backup_path)
    assert backend.read() == doc
    stored = backend.write(doc.evolve(outputs={"n": 3}))
    assert sorted(p.name for p in backend.directory.iterdir()) == [
        "demo.state.json",
        "demo.state.json.backup",
        "demo.state.lock",
    ]
    assert StateDocument.from_json(backend.backup_path.read_text()) == doc
    assert backend.read() == stored
