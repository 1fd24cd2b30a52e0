"""Fixtures for the runner tests: bundles built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.runner import make_bundle


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The probe apps' bundles, by name."""
    out = tmp_path_factory.mktemp("bundles")
    return {
        "probe": make_bundle(out / "probe.skyb"),
        "nosetup": make_bundle(out / "nosetup.skyb", "NoSetup"),
        "short-startup": make_bundle(out / "short.skyb", overrides={"startup_timeout": 1}),
        "short-request": make_bundle(out / "shortreq.skyb", overrides={"request_timeout": 1}),
    }
