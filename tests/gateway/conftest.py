"""Fixtures for the gateway tests: real gateway processes, real runners, real HTTP.

The `tag`, `count_dir` and `no_leftovers` fixtures are the shared ones
(support.fixtures): no process a test starts may outlive it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.fixtures import counts_folder
from support.gateway import APPS, BUNDLE_KEY, GatewayProc
from support.procs import assert_none_left

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
    with counts_folder() as counts:
        gw = GatewayProc(root / "state", tag, counts)
        try:
            yield gw.start()
        finally:
            gw.stop()
            gw.http.close()
            assert_none_left(tag, "the module")
