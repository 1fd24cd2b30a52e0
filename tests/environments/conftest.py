"""Fixtures for per-app environment tests: one private cache, real builds, built once.

Builds are real (uv, the user's package index configuration) and use small
pure-Python packages; each distinct environment is built once per session.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.envs import PYTHON_VERSION, SMALL, env_vars


@pytest.fixture(scope="session")
def session_cache() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="skyform-envs-") as tmp:
        yield Path(tmp)


@pytest.fixture(autouse=True)
def _private_cache(session_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test here uses the session's private cache, never the user's."""
    monkeypatch.setenv("SKYFORM_CACHE_DIR", str(session_cache))
    monkeypatch.delenv("SKYFORM_ENV_INSTALLER", raising=False)
    return session_cache


@pytest.fixture(scope="session")
def six_env(session_cache: Path):
    """The environment of an app requiring only `six`, built once (and its progress lines)."""
    from skyform.providers.environments import ensure_environment

    lines: list[str] = []
    # Built as a deployer who keeps bytecode out of their checkout would: the
    # environment must still be compiled (see test_env_build).
    with env_vars(
        SKYFORM_CACHE_DIR=str(session_cache),
        SKYFORM_ENV_INSTALLER=None,
        PYTHONDONTWRITEBYTECODE="1",
    ):
        env = ensure_environment([SMALL], PYTHON_VERSION, lines.append)
    return env, lines
