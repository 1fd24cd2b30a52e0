"""Fixtures for the SkyPilot provider's tests: real SkyPilot, offline.

SkyPilot reads its catalogs and state under `$HOME/.sky`, with the catalog path
fixed when `sky` is imported. These tests give it a private HOME holding the
catalog subsets from tests/data/skypilot-catalogs, only Lambda allowed
and marked enabled (what `sky check` would record), and fake Lambda
credentials. `sky` is imported once per test process, while that HOME is set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.skypilot import SKY_ENV, FakeCloud, make_sky_home, seed_enabled_clouds


@pytest.fixture(scope="session")
def sky_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sky_home(tmp_path_factory.mktemp("skyhome"))


@pytest.fixture(scope="module")
def sky(sky_home: Path) -> Iterator[Any]:
    """`sky`, imported under the private HOME; HOME is restored after the module."""
    saved = {k: os.environ.get(k) for k in ["HOME", *SKY_ENV]}
    os.environ.update(SKY_ENV, HOME=str(sky_home))
    try:
        try:
            import sky as sky_module
        except ModuleNotFoundError:
            pytest.fail("SkyPilot is not installed: pip install -e '.[dev,skypilot]'")
        seed_enabled_clouds()
        yield sky_module
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def enabled(sky: Any) -> Any:
    """Lambda enabled afresh (a test that asks for a disabled cloud makes SkyPilot
    re-check, which forgets Lambda since its credentials are fake)."""
    seed_enabled_clouds()
    return sky


@pytest.fixture
def fake_cloud() -> FakeCloud:
    return FakeCloud()
