"""Fixtures for the SDK, loader and bundle tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.projects import GREETING, HELLO_APP, write_project


@pytest.fixture
def hello_project(tmp_path: Path) -> Path:
    return write_project(tmp_path / "proj", {"app.py": HELLO_APP, "greeting.py": GREETING})
