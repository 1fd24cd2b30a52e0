"""Fixtures every test folder may use, registered once from tests/conftest.py.

Processes a test starts carry a tag in their environment (runners inherit it
from their gateway); `no_leftovers` checks after the test that none of them is
still alive, kills any it finds and fails the test.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.procs import assert_none_left


@contextlib.contextmanager
def counts_folder() -> Iterator[Path]:
    """Where test apps record their calls: writable by runners, which may run as another
    user (pytest's own temp folders are private to the user running the tests)."""
    with tempfile.TemporaryDirectory(prefix="skyform-gw-counts-") as path:
        os.chmod(path, 0o1777)
        yield Path(path)


@pytest.fixture
def tag() -> str:
    """This test's process tag (see `support.procs.TAG_VAR`)."""
    return uuid.uuid4().hex


@pytest.fixture
def count_dir() -> Iterator[Path]:
    with counts_folder() as path:
        yield path


@pytest.fixture
def no_leftovers(tag: str) -> Iterator[None]:
    """Fails the test if any process it started (gateway or runner) outlives it."""
    yield
    assert_none_left(tag, "the test")
