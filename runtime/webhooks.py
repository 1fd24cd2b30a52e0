"""Webhooks: `?fal_webhook=URL` on a queue submit POSTs the outcome there once it completes.

Why each rule:
- **Durable**: the POST is written to an outbox table in the queue's SQLite in
  the same transaction that records the result, so a gateway restart between
  completion and delivery loses nothing; the sender picks the row up again.
- **Retried**: any answer other than 2xx, or no answer, is retried with
  exponential backoff (`SKYFORM_WEBHOOK_BACKOFF_S` base, doubling, capped at
  `BACKOFF_MAX_S`) up to `MAX_ATTEMPTS` times; then the row is marked failed
  and the gateway log says why.
- **Signed**: `X-Skyform-Webhook-Signature: t=<unix seconds>,v1=<hex>` where
  hex is HMAC-SHA256 of `"<t>." + body` under the stack's webhook key
  (`SKYFORM_WEBHOOK_KEY`, else generated once into the gateway's state dir).
  `verify_signature` is what a receiver runs.
- **No SSRF**: with `gateway.webhook_hosts` set, only those hosts are called.
  A host that is not listed must resolve to public addresses only (every
  address is checked, at submit and again before each delivery, and the
  connection goes to the address that was checked, so DNS cannot swap in a
  private one in between). Loopback, private, link-local and other reserved
  addresses are refused unless their host is listed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import socket
import ssl
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from skyform.files import write_atomic

log = logging.getLogger("skyform.gateway")

SIGNATURE_HEADER = "x-skyform-webhook-signature"
MAX_ATTEMPTS = 10
BACKOFF_MAX_S = 900.0
SEND_TIMEOUT_S = 15.0
MAX_URL = 2048
ENV_KEY = "SKYFORM_WEBHOOK_KEY"
ENV_HOSTS = "SKYFORM_WEBHOOK_HOSTS"


class WebhookRefused(ValueError):
    """A webhook URL the gateway will not call (answered 400 at submit)."""


def backoff_base() -> float:
    return float(os.environ.get("SKYFORM_WEBHOOK_BACKOFF_S", "5"))


def sign(key: bytes, body: bytes, timestamp: int | None = None) -> str:
    """The signature header value for `body`."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(key, f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify_signature(key: bytes, body: bytes, header: str, tolerance_s: float = 300.0) -> bool:
    """True when `header` signs `body` under `key` and is at most `tolerance_s` old.

    For receivers: `verify_signature(key, raw_body, request.headers[SIGNATURE_HEADER])`.
    """
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        t = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - t) > tolerance_s:
        return False
    expected = sign(key, body, t).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def webhook_key(environ: dict[str, str], state_dir: Path) -> bytes:
    """`$SKYFORM_WEBHOOK_KEY`, else one generated once into `<state-dir>/webhook-key` (0600)."""
    if environ.get(ENV_KEY):
        return environ[ENV_KEY].encode()
    path = state_dir / "webhook-key"
    if path.exists():
        value = path.read_text().strip()
        if value:
            return value.encode()
    value = secrets.token_urlsafe(32)
    write_atomic(path, value + "\n", mode=0o600)
    log.info("%s is not set: generated the webhook signing key into %s", ENV_KEY, path)
    return value.encode()


def parse_hosts(value: str | None) -> frozenset[str] | None:
    """`SKYFORM_WEBHOOK_HOSTS` (comma-separated) as a set; None when unset (no list)."""
    if value is None or not value.strip():
        return None
    return frozenset(h.strip().lower().strip("[]") for h in value.split(",") if h.strip())


def payload(request_id: str, status: int | None, body: bytes | None, error: str | None) -> bytes:
    """fal's webhook body: `{request_id, gateway_request_id, status, payload, error}`."""
    ok = status is not None and status < 400
    try:
        result: Any = json.loads(body) if body else None
    except ValueError:
        result = {"detail": (body or b"")[:2000].decode(errors="replace")}
    if not ok and error is None:
        error = f"the endpoint answered {status}"
    return json.dumps(
        {
            "request_id": request_id,
            "gateway_request_id": request_id,
            "status": "OK" if ok else "ERROR",
            "payload": result,
            "error": None if ok else error,
        }
    ).encode()


class WebhookPolicy:
    """Which webhook URLs may be called (see the module docstring)."""

    def __init__(self, hosts: Iterable[str] | None) -> None:
        self.hosts = frozenset(hosts) if hosts is not None else None

    async def check(self, url: str) -> str | None:
        """Raise WebhookRefused for a URL not to call; else the address to connect to.

        None means: connect by name (a listed host).
        """
        if len(url) > MAX_URL:
            raise WebhookRefused(f"fal_webhook is longer than {MAX_URL} characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise WebhookRefused(f"fal_webhook {url!r} is not a URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WebhookRefused(f"fal_webhook {url!r} must be an http:// or https:// URL")
        if parts.username or parts.password:
            raise WebhookRefused("fal_webhook must not carry credentials")
        host = parts.hostname.lower()
        listed = self.hosts is not None and host in self.hosts
        if self.hosts is not None and not listed:
            raise WebhookRefused(
                f"fal_webhook host {host!r} is not in gateway.webhook_hosts "
                f"({', '.join(sorted(self.hosts))})"
            )
        if listed:
            return None
        port = port or (443 if parts.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except OSError as exc:
            raise WebhookRefused(f"fal_webhook host {host!r} does not resolve: {exc}") from None
        addresses = sorted({str(info[4][0]) for info in infos})
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            if not ip.is_global or ip.is_multicast:
                raise WebhookRefused(
                    f"fal_webhook host {host!r} resolves to {address}, a private or loopback "
                    "address; list the host in gateway.webhook_hosts to allow it"
                )
        return addresses[0]


class WebhookSender:
    """Delivers the outbox's rows, oldest due first, on the gateway's event loop."""

    def __init__(self, store: Any, key: bytes, policy: WebhookPolicy) -> None:
        self.store = store
        self.key = key
        self.policy = policy
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    def _http(self) -> Any:
        """The HTTP client, made at the first delivery: httpx and the system CAs take
        tens of milliseconds to load, which a gateway's start (and so `apply`) would wait
        for, and most gateways never send a webhook."""
        if self._client is None:
            import httpx

            # No proxies from the environment: a proxy would connect to whatever the
            # checked name resolves to on its side. System CAs (and SSL_CERT_FILE).
            self._client = httpx.AsyncClient(
                trust_env=False, verify=ssl.create_default_context(), timeout=SEND_TIMEOUT_S
            )
        return self._client

    def wake(self) -> None:
        self._wake.set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def _loop(self) -> None:
        while True:
            try:
                # Concurrently: one slow receiver must not hold up the others' POSTs.
                rows = self.store.due_webhooks(time.time())
                done = await asyncio.gather(
                    *(self._deliver(*row) for row in rows), return_exceptions=True
                )
                for outcome in done:
                    if isinstance(outcome, Exception):
                        log.error("webhook delivery failed", exc_info=outcome)
                wait = self.store.next_webhook_in(time.time())
            except Exception:
                log.exception("webhook delivery failed")
                wait = 1.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._wake.wait(), timeout=60.0 if wait is None else min(wait, 60.0)
                )

    async def _deliver(
        self, seq: int, request_id: str, url: str, body: bytes, attempts: int
    ) -> None:
        attempts += 1
        error = ""
        try:
            address = await self.policy.check(url)
        except WebhookRefused as exc:
            self.store.webhook_failed(seq, attempts, str(exc))
            log.error("webhook for request %s not sent: %s", request_id, exc)
            return
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: sign(self.key, body),
            "x-skyform-request-id": request_id,
            "user-agent": "skyform-gateway",
        }
        target, extensions = url, {}
        if address is not None:
            # Connect to the address that was checked; the name stays in Host and SNI.
            parts = urlsplit(url)
            host = f"[{address}]" if ":" in address else address
            netloc = host + (f":{parts.port}" if parts.port else "")
            target = parts._replace(netloc=netloc).geturl()
            headers["host"] = parts.netloc.rsplit("@", 1)[-1]
            extensions = {"sni_hostname": parts.hostname or ""}
        try:
            response = await self._http().post(
                target, content=body, headers=headers, extensions=extensions
            )
            if 200 <= response.status_code < 300:
                self.store.webhook_delivered(seq)
                log.info("webhook for request %s delivered (attempt %d)", request_id, attempts)
                return
            error = f"the receiver answered {response.status_code}"
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        if attempts >= MAX_ATTEMPTS:
            self.store.webhook_failed(seq, attempts, error)
            log.error(
                "webhook for request %s failed after %d attempts: %s", request_id, attempts, error
            )
            return
        delay = min(backoff_base() * 2 ** (attempts - 1), BACKOFF_MAX_S)
        self.store.webhook_retry(seq, attempts, time.time() + delay, error)
        log.warning(
            "webhook for request %s: %s; retry %d in %.1fs", request_id, error, attempts, delay
        )
