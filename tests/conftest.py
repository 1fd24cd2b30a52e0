"""Suite-wide set-up: runner environments are built in a private cache, never the user's;
the shared fixtures (support.fixtures) are registered here, once."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest

pytest_plugins = ["support.fixtures"]


@pytest.fixture(scope="session", autouse=True)
def _private_environment_cache() -> Iterator[None]:
    """Runners started by any test (and the processes they spawn) share one throwaway cache."""
    previous = os.environ.get("SKYFORM_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="skyform-test-cache-") as cache:
        # Run as root, runners run as an unprivileged user, who must reach the environments.
        os.chmod(cache, 0o755)
        os.environ["SKYFORM_CACHE_DIR"] = cache
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("SKYFORM_CACHE_DIR", None)
            else:
                os.environ["SKYFORM_CACHE_DIR"] = previous
