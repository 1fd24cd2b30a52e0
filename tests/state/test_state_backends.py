"""The state contract, on both backends: serial and lineage rules, locks, damage, secrets."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from support.stored import set_stored_text, stored_bytes, stored_text

from skyform.state import StateBackend, StateDocument, StateError, StateLockedError

Make = Callable[[], StateBackend]


def test_read_without_state_gives_fresh_document_and_stores_nothing(make_backend: Make) -> None:
    backend = make_backend()
    doc = backend.read()
    assert (doc.serial, doc.resources, doc.outputs, doc.stack) == (0, {}, {}, backend.stack)
    assert stored_text(backend) is None


def test_serial_grows_only_when_something_changes(make_backend: Make) -> None:
    backend = make_backend()
    with backend.lock(operation="apply"):
        doc = backend.read()
        first = backend.write(doc.evolve(resources={"gateway": {"port": 8765}}))
        assert (first.serial, first.lineage) == (1, doc.lineage)
        same = backend.write(first.evolve(resources={"gateway": {"port": 8765}}))
        assert same.serial == 1
        second = backend.write(first.evolve(outputs={"gateway_url": "http://127.0.0.1:8765"}))
        assert second.serial == 2
    stored = make_backend().read()
    assert stored == second
    assert json.loads(stored_text(backend) or "")["serial"] == 2


def test_writing_a_fresh_empty_state_creates_it(make_backend: Make) -> None:
    backend = make_backend()
    stored = backend.write(backend.read())
    assert stored.serial == 1
    assert make_backend().read().lineage == stored.lineage


def test_older_serial_is_refused_and_nothing_changes(make_backend: Make) -> None:
    alice, bob = make_backend(), make_backend()
    base = alice.write(alice.read().evolve(resources={"app.a": {"v": 1}}))
    stale = bob.read()
    alice.write(base.evolve(resources={"app.a": {"v": 2}}))
    before = stored_text(alice)
    with pytest.raises(StateError, match="read at serial 1 but the stored state is at serial 2"):
        bob.write(stale.evolve(resources={"app.a": {"v": 3}}))
    assert stored_text(alice) == before


def test_other_lineage_is_refused_and_nothing_changes(make_backend: Make) -> None:
    backend = make_backend()
    backend.write(backend.read().evolve(resources={"app.a": {}}))
    before = stored_text(backend)
    impostor = StateDocument.new(backend.stack).evolve(resources={"app.b": {}})
    with pytest.raises(StateError, match=r"lineage .* differs from the stored lineage"):
        backend.write(impostor.with_serial(50))
    assert stored_text(backend) == before


def test_document_of_another_stack_is_refused(make_backend: Make) -> None:
    backend = make_backend()
    with pytest.raises(StateError, match="refusing to write state of stack 'other'"):
        backend.write(StateDocument.new("other"))
    assert stored_text(backend) is None


def test_lock_is_exclusive_and_names_its_holder(make_backend: Make) -> None:
    holder, other = make_backend(), make_backend()
    assert other.current_lock() is None
    with holder.lock(operation="apply") as info:
        assert holder.current_lock() == info
        assert other.current_lock() == info
        with pytest.raises(StateLockedError) as err, other.lock(operation="plan"):
            pass
        message = str(err.value)
        for part in (info.id, "'apply'", info.who, info.created):
            assert part in message
        assert err.value.info == info
        with pytest.raises(StateLockedError):
            other.write(other.read().evolve(outputs={"x": 1}))
        with pytest.raises(StateError, match="already locked by this process"), holder.lock():
            pass
    assert other.current_lock() is None
    assert stored_text(holder) is None
    with other.lock(operation="plan") as second:
        assert second.id != info.id


def test_lock_is_released_when_the_block_raises(make_backend: Make) -> None:
    backend = make_backend()
    with pytest.raises(RuntimeError), backend.lock():
        raise RuntimeError("boom")
    assert make_backend().current_lock() is None


def test_negative_timeout_is_refused(make_backend: Make) -> None:
    with (
        pytest.raises(StateError, match="lock timeout must be 0 or more"),
        make_backend().lock(timeout=-1),
    ):
        pass


def test_force_unlock_wrong_id_is_refused(make_backend: Make) -> None:
    holder, other = make_backend(), make_backend()
    with pytest.raises(StateError, match="it is not locked"):
        other.force_unlock("nope")
    with holder.lock() as info:
        with pytest.raises(StateError, match=f"it is locked with id {info.id}"):
            other.force_unlock("nope")
        with pytest.raises(StateError, match="this process holds lock"):
            holder.force_unlock(info.id)
        assert other.current_lock() == info


@pytest.mark.parametrize(
    "damage",
    ["{ this is not json", '{"version": 7, "lineage": "x"}', '{"version": 1}', "[1, 2]"],
)
def test_damaged_state_is_one_clear_error_and_never_overwritten(
    make_backend: Make, damage: str
) -> None:
    backend = make_backend()
    good = backend.write(backend.read().evolve(resources={"app.a": {"v": 1}}))
    set_stored_text(backend, damage)
    with pytest.raises(StateError) as err:
        backend.read()
    assert "\n" not in str(err.value)
    assert backend.stack in str(err.value) or "state file" in str(err.value)
    with pytest.raises(StateError):
        backend.write(good.evolve(resources={"app.a": {"v": 2}}))
    with pytest.raises(StateError), backend.lock():
        backend.write(StateDocument.new(backend.stack))
    assert stored_text(backend) == damage


def test_secret_values_never_reach_storage(make_backend: Make, monkeypatch) -> None:
    value = "hf_s3cr3t-value-that-must-not-leak"
    monkeypatch.setenv("HF_TOKEN", value)
    backend = make_backend()
    spec = {"app": "apps/x.py::X", "secrets": ["HF_TOKEN"], "env": {"GREETING": "hi"}}
    with backend.lock():
        doc = backend.write(backend.read().evolve(resources={"app.x": {"spec": spec}}))
        # A value smuggled in anywhere else is caught by the scan of the bytes to be stored.
        with pytest.raises(StateError, match="contains the value of secret HF_TOKEN"):
            backend.write(doc.evolve(outputs={"debug": f"token={value}"}))
        with pytest.raises(StateError, match="'secrets' must be a list of names"):
            backend.write(doc.evolve(resources={"app.x": {"secrets": {"HF_TOKEN": value}}}))
        # the stack's own tokens are never stored either, named or not
        monkeypatch.setenv("SKYFORM_ADMIN_TOKEN", "admin-token-0123456789")
        with pytest.raises(StateError, match="value of secret SKYFORM_ADMIN_TOKEN"):
            backend.write(doc.evolve(outputs={"admin": "admin-token-0123456789"}))
        raw = stored_bytes(backend)
    assert b"HF_TOKEN" in raw  # the name is kept ...
    assert value.encode() not in raw  # ... the value never
    assert backend.read() == doc
