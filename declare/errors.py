"""The one exception type a user sees.

Anything raised as a :class:`SkyformError` is a user-facing problem: the CLI
prints its message on one line (no traceback) and exits 1. Everything else is
a bug in skyform and keeps its traceback.
"""

from __future__ import annotations


class SkyformError(Exception):
    """A problem the user can fix: bad input, a held lock, a refused bundle."""


class AppDefinitionError(SkyformError, TypeError):
    """An App class breaks the SDK's rules (unknown option, no endpoint, ...)."""


class AppLoadError(SkyformError):
    """An App could not be found or imported from `file.py::Class`."""


class BundleError(SkyformError):
    """A bundle could not be built, or was refused when loading it."""
