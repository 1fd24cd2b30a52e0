"""The queue store's compaction, large bodies and upgrade of older stores; limit parsing."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from skyform.errors import SkyformError
from skyform.runtime.limits import BodyBudget, GatewayLimits
from skyform.runtime.queue_store import QueueStore, StoredRequest

OLD_SCHEMA = """
CREATE TABLE requests (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, app TEXT NOT NULL,
    path TEXT NOT NULL, method TEXT NOT NULL, body BLOB NOT NULL, content_type TEXT NOT NULL,
    no_retry INTEGER NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL, started REAL, completed REAL, result_status INTEGER,
    result_body BLOB, result_type TEXT, error TEXT, error_type TEXT
);
INSERT INTO requests (id, app, path, method, body, content_type, no_retry, status, created)
VALUES ('old', 'a', '/', 'POST', x'7b7d', 'application/json', 0, 'IN_PROGRESS', 1.0);
"""


def request(rid: str, body: bytes, key: str | None = None) -> StoredRequest:
    return StoredRequest(
        id=rid,
        app="a",
        path="/",
        method="POST",
        body=body,
        content_type="application/octet-stream",
        no_retry=False,
        status="IN_QUEUE",
        attempts=0,
        created=time.time(),
        idem_key=key,
    )


def test_a_store_of_an_older_gateway_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(OLD_SCHEMA)
    db.close()
    store = QueueStore(path)
    try:
        (old,) = store.open_requests()
        assert (old.id, old.status, old.deaths, old.idem_key, old.size) == (
            "old",
            "IN_PROGRESS",
            0,
            None,
            2,
        )
        assert store.get_body("old") == b"{}"
        assert store._db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    finally:
        store.close()


def test_large_bodies_are_stored_apart_and_the_file_shrinks(tmp_path: Path) -> None:
    store = QueueStore(tmp_path / "gateway.sqlite3")
    try:
        big = bytes(range(256)) * (12 * 4096)  # 12 MiB
        store.add_request(request("big", big, key="k1"))
        store.add_request(request("small", b"tiny"))
        assert store.get_body("big") == big and store.get_body("small") == b"tiny"
        assert {r.id: r.size for r in store.open_requests()} == {"big": len(big), "small": 4}
        assert all(r.body == b"" for r in store.open_requests())
        assert store.find_by_idempotency_key("a", "k1") == "big"
        assert store.find_by_idempotency_key("b", "k1") is None
        with pytest.raises(sqlite3.IntegrityError):
            store.add_request(request("twin", b"x", key="k1"))
        grown = store.disk_bytes()
        assert grown > len(big)
        for req in store.open_requests():
            req.completed = time.time() - 60
            store.complete_request(req)
        assert store.get_body("big") == b""
        while store.compact():
            pass
        assert store.disk_bytes() < grown // 4
        assert store.prune_completed(time.time()) == 2
        assert store.find_by_idempotency_key("a", "k1") is None  # kept as long as its result
    finally:
        store.close()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([], "gateway limits must be an object"),
        ({"max_body_byte": 1}, "unknown gateway limit 'max_body_byte' (did you mean"),
        ({"max_body_bytes": 0}, "max_body_bytes must be a positive integer, got 0"),
        ({"max_body_bytes": 1.5}, "max_body_bytes must be a positive integer"),
        ({"header_timeout": True}, "header_timeout must be a positive number, got True"),
        ({"result_ttl": float("inf")}, "result_ttl must be a positive number"),
    ],
)
def test_bad_limits_are_one_clear_error(data: object, message: str) -> None:
    with pytest.raises(SkyformError) as info:
        GatewayLimits.from_mapping(data)
    assert message in str(info.value)


def test_limits_from_the_environment_and_the_body_budget() -> None:
    assert GatewayLimits.from_environ({}) == GatewayLimits()
    limits = GatewayLimits.from_environ({"SKYFORM_GATEWAY_LIMITS": '{"max_body_bytes": 10}'})
    assert limits.max_body_bytes == 10 and limits.header_timeout == GatewayLimits.header_timeout
    budget = BodyBudget(100)
    assert budget.try_charge(60) and not budget.try_charge(41) and budget.try_charge(40)
    budget.release(100)
    assert budget.used == 0 and budget.try_charge(100)
