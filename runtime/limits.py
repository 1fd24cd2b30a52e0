"""The gateway's resource limits: what one stack's public front door may be made to hold.

A public app lets anyone send requests; without bounds, a few callers can fill
the gateway's memory (large bodies read at once), its disk (large bodies
queued, results kept forever) or its connection table (slow or huge headers).
Each bound here is configurable per stack (`gateway: {limits: {...}}` in
`skyform.yaml`); `apply` hands them to the gateway process as JSON in
`SKYFORM_GATEWAY_LIMITS`.

Also here: `BodyBudget`, the one counter of body bytes held in memory across
all concurrent requests, charged while a body streams in (not after).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from typing import Any

from skyform.errors import SkyformError
from skyform.suggest import did_you_mean

LIMITS_ENV = "SKYFORM_GATEWAY_LIMITS"
MIB = 1024 * 1024


@dataclass(frozen=True)
class GatewayLimits:
    """Every limit of one gateway, with the defaults a stack gets when it sets none."""

    # Request line + headers of one request; past it: 431.
    max_header_bytes: int = 64 * 1024
    # Seconds a connection may take to send a complete request head (slowloris); past it: closed.
    header_timeout: float = 10.0
    # Seconds a request body may stall (no bytes) while it is read; past it: 408.
    body_timeout: float = 30.0
    # One request's body; past it: 413.
    max_body_bytes: int = 64 * MIB
    # Body bytes held in memory across all requests being read or run; past it: 503 + Retry-After.
    max_inflight_body_bytes: int = 256 * MIB
    # Body bytes of one app's accepted, unfinished queue requests; past it: 429 + Retry-After.
    max_queued_bytes_per_app: int = 1024 * MIB
    # Seconds a completed request's result (and its idempotency key) is kept.
    result_ttl: float = 7 * 24 * 3600.0
    # Gateway deaths a request may be in flight at before it fails as `poisoned`.
    poison_after_deaths: int = 3

    @classmethod
    def from_mapping(cls, data: Any, where: str = LIMITS_ENV) -> GatewayLimits:
        """Limits from a mapping of overrides; a bad key or value is one clear error."""
        if not isinstance(data, dict):
            raise SkyformError(f"{where}: gateway limits must be an object")
        names = [f.name for f in fields(cls)]
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key not in names:
                raise SkyformError(
                    f"{where}: unknown gateway limit {key!r}{did_you_mean(str(key), names)}"
                )
            integer = isinstance(getattr(cls, key), int)
            ok = (
                isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isfinite(value)
                and value > 0
                and (not integer or float(value).is_integer())
            )
            if not ok:
                kind = "a positive integer" if integer else "a positive number"
                raise SkyformError(f"{where}: gateway limit {key} must be {kind}, got {value!r}")
            values[key] = int(value) if integer else float(value)
        return cls(**values)

    @classmethod
    def from_environ(cls, environ: dict[str, str]) -> GatewayLimits:
        """The limits `apply` passed in `SKYFORM_GATEWAY_LIMITS` (absent: the defaults)."""
        raw = environ.get(LIMITS_ENV, "").strip()
        if not raw:
            return cls()
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise SkyformError(f"{LIMITS_ENV} is not valid JSON: {exc}") from None
        return cls.from_mapping(data)


class BodyBudget:
    """Body bytes held in memory by the gateway, across every concurrent request.

    A request charges its declared length (or each chunk, without one) before
    the bytes are read, and gives it back when the body is no longer held; a
    charge that would pass the bound is refused, so memory stays bounded
    whatever many callers send at once. Event-loop thread only.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def try_charge(self, n: int) -> bool:
        if n > 0 and self.used + n > self.limit:
            return False
        self.used += n
        return True

    def release(self, n: int) -> None:
        self.used = max(0, self.used - n)
