"""Canonical JSON, and the HMAC-SHA256 signatures made over it with a stack's key.

Bundles, saved plans and secret digests all sign JSON values; one encoding
(sorted keys, no spaces) makes a signature independent of dict order.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any


def canonical_json(value: Any) -> bytes:
    """`value` as compact JSON with sorted keys: equal values give equal bytes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def sign(value: Any, key: str) -> str:
    """The hex HMAC-SHA256 of `value`'s canonical JSON under `key`."""
    return hmac.new(key.encode(), canonical_json(value), hashlib.sha256).hexdigest()
