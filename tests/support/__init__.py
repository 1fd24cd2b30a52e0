"""Shared test support: helpers every test folder needs, kept in one place.

`tests/` is on the import path (pytest's `pythonpath` setting), so tests import
these as `from support.procs import ...`; each folder's own `*_helpers.py`
keeps only what is specific to that folder.
"""
