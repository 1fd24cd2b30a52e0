"""Fixtures for the fal wire-compatibility tests: a TLS gateway with real runners.

The gateway process driver is the shared one (support.gateway); every
process a test starts carries a tag, and none may outlive its test or module.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.fal import APPS, TLSGateway, make_tls
from support.gateway import BUNDLE_KEY
from support.procs import assert_none_left

from skyform.bundle import Bundle, build_bundle


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def fal_bundles() -> dict[str, Bundle]:
    ref = str(APPS / "fal_echo.py") + "::FalEcho"

    def build(**overrides: Any) -> Bundle:
        return build_bundle(ref, APPS, BUNDLE_KEY, overrides)

    return {
        "echo": build(min_runners=1),
        "pair": build(min_runners=2, max_runners=2, keep_alive=60),
        "cold": build(min_runners=0, max_runners=1),
    }


def start_gateway(root: Path, tls: tuple[Path, Path, Path], **env: str) -> TLSGateway:
    counts = root / "counts"
    counts.mkdir(parents=True, exist_ok=True)
    return TLSGateway(root / "state", uuid.uuid4().hex, counts, tls, env=env)


@pytest.fixture(scope="module")
def fal_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    tls: tuple[Path, Path, Path],
    fal_bundles: dict[str, Bundle],
) -> Iterator[TLSGateway]:
    """One TLS gateway per module with a private app `echo` (one warm runner)."""
    gw = start_gateway(tmp_path_factory.mktemp("falgw"), tls, SKYFORM_WEBHOOK_HOSTS="127.0.0.1")
    try:
        gw.start()
        gw.register("echo", fal_bundles["echo"], auth="private")
        yield gw
    finally:
        gw.stop()
        gw.http.close()
        assert_none_left(gw.tag, "the module")


@pytest.fixture
def fresh_gateway(tmp_path: Path, tls: tuple[Path, Path, Path]) -> Iterator[Any]:
    """Start gateways for one test (`fresh_gateway(**env)`); all are stopped after it."""
    started: list[TLSGateway] = []

    def make(**env: str) -> TLSGateway:
        gw = start_gateway(tmp_path / f"gw{len(started)}", tls, **env)
        started.append(gw)
        return gw

    try:
        yield make
    finally:
        for gw in started:
            gw.stop()
            gw.http.close()
        for gw in started:
            assert_none_left(gw.tag, "the test")
