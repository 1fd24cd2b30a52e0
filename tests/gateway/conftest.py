"""Fixtures for the gateway tests: real gateway processes, real runners, real HTTP.

Every process a test starts carries a tag in its environment (runners inherit
it from their gateway); after each test, `no_leftovers` checks that no tagged
process is still alive, kills any it finds and fails the test.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_helpers import APPS, BUNDLE_KEY, GatewayProc, assert_none_left

from skyform.bundle import Bundle, build_bundle


@pytest.fixture(scope="session")
def bundles() -> dict[str, Bundle]:
    """Bundles built once per session; names say which options they carry."""
    echo = str(APPS / "gw_echo.py") + "::Echo"

    def build(ref: str, **overrides: Any) -> Bundle:
        return build_bundle(ref, APPS, BUNDLE_KEY, overrides)

    return {
        "echo": build(echo),
        "echo_public": build(echo, auth="public"),
        "burst": build(echo, max_runners=3, max_multiplexing=2, keep_alive=1),
        "warm": build(echo, min_runners=1, max_runners=2, keep_alive=0.5),
        "slow_start": build(echo, max_runners=1),
        "v2": build(str(APPS / "gw_echo_v2.py") + "::EchoV2"),
        "broken": build(str(APPS / "gw_echo.py") + "::Broken"),
        "timeouts": build(echo, request_timeout=1),
    }


@pytest.fixture
def tag() -> str:
    return uuid.uuid4().hex


@contextlib.contextmanager
def _counts_folder() -> Iterator[Path]:
    """Where test apps record their calls: writable by runners, which may run as another
    user (pytest's own temp folders are private to the user running the tests)."""
    with tempfile.TemporaryDirectory(prefix="skyform-gw-counts-") as path:
        os.chmod(path, 0o1777)
        yield Path(path)


@pytest.fixture
def count_dir() -> Iterator[Path]:
    with _counts_folder() as path:
        yield path


@pytest.fixture
def no_leftovers(tag: str) -> Iterator[None]:
    """Fails the test if any process it started (gateway or runner) outlives it."""
    yield
    assert_none_left(tag, "the test")


@pytest.fixture
def gateway(tmp_path: Path, tag: str, count_dir: Path, no_leftovers: None) -> Iterator[GatewayProc]:
    gw = GatewayProc(tmp_path / "state", tag, count_dir)
    try:
        yield gw.start()
    finally:
        gw.stop()
        gw.http.close()


@pytest.fixture(scope="module")
def shared_gateway(
    tmp_path_factory: pytest.TempPathFactory, bundles: dict[str, Bundle]
) -> Iterator[GatewayProc]:
    """One gateway for a whole module (tests that only need an app up)."""
    tag = uuid.uuid4().hex
    root = tmp_path_factory.mktemp("gw")
    with _counts_folder() as counts:
        gw = GatewayProc(root / "state", tag, counts)
        try:
            yield gw.start()
        finally:
            gw.stop()
            gw.http.close()
            assert_none_left(tag, "the module")
