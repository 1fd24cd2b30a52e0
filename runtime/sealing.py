"""Sealing values the gateway must keep on disk but nobody may read there: app secrets.

The gateway's store (SQLite under its state directory) has to remember each
app's secrets, so that a gateway restarted after a crash still starts runners
with them. They are stored sealed with AES-256-GCM under a key derived from
the stack's bundle key, which reaches the gateway on a pipe at start and is
never written by the gateway. A copy of the store (a backup, a leaked file) is
useless without that key; a tampered value fails to open instead of decoding
to something else. The app's name is bound in as associated data, so a sealed
value cannot be moved from one app's row to another's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os

from skyform.errors import SkyformError

_PREFIX = "sealed:v1:"
_NONCE = 12


class Sealer:
    """Seals and opens JSON values under one key (see the module docstring)."""

    def __init__(self, bundle_key: str) -> None:
        if not bundle_key:
            raise SkyformError("no bundle key: the gateway cannot seal or open secrets")
        self._key = hmac.new(
            bundle_key.encode(), b"skyform gateway store: sealed secrets v1", hashlib.sha256
        ).digest()

    def seal(self, value: dict[str, str], context: str) -> str:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        nonce = os.urandom(_NONCE)
        plain = json.dumps(value, sort_keys=True).encode()
        sealed = AESGCM(self._key).encrypt(nonce, plain, context.encode())
        return _PREFIX + base64.b64encode(nonce + sealed).decode()

    def open(self, text: str, context: str) -> dict[str, str]:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not text:
            return {}
        if not text.startswith(_PREFIX):
            raise SkyformError(f"{context}: stored secrets are not sealed")
        try:
            raw = base64.b64decode(text[len(_PREFIX) :], validate=True)
            plain = AESGCM(self._key).decrypt(raw[:_NONCE], raw[_NONCE:], context.encode())
        except (ValueError, InvalidTag):
            raise SkyformError(
                f"{context}: stored secrets do not open with this stack's bundle key "
                "(another key, or a damaged store); apply again to re-send them"
            ) from None
        value = json.loads(plain)
        if not isinstance(value, dict):
            raise SkyformError(f"{context}: stored secrets are not an object")
        return {str(k): str(v) for k, v in value.items()}
