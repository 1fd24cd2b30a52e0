"""A small client for the gateway's admin API (`/-/...`, bearer admin token).

`plan` refreshes through it (which apps and revisions are live), `apply`
registers and removes app revisions, `status` and `logs` read from it. Every
failure becomes one `GatewayError` line naming the gateway and what was asked.

Over https the gateway's certificate is always verified: against the stack
CA (`ca_file`) and, where the gateway was reached at an address its
certificate could not name in advance, against its fixed `server_name`.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx

from skyform.errors import SkyformError

if TYPE_CHECKING:
    from skyform.providers.base import GatewayHandle


class GatewayError(SkyformError):
    """The gateway did not answer, or refused an admin call (`status`: its HTTP status)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class GatewayClient:
    """Admin calls to one stack's gateway."""

    def __init__(
        self,
        url: str,
        admin_token: str,
        timeout: float = 30.0,
        ca_file: str | None = None,
        server_name: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        verify: Any = True
        if self.url.startswith("https://"):
            from skyform.tlscontext import client_context

            verify = client_context(ca_file)
        # httpx checks the certificate against this name instead of the URL's host.
        self._extensions = {"sni_hostname": server_name} if server_name else {}
        self._client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=timeout,
            trust_env=False,
            verify=verify,
        )

    @classmethod
    def for_handle(
        cls,
        handle: GatewayHandle,
        admin_token: str,
        timeout: float = 30.0,
        ca_file: str | None = None,
    ) -> GatewayClient:
        """A client for the gateway a provider started, trusting what its handle records.

        The recorded CA file is an absolute path of the machine that applied; on
        another machine (a shared state, another CI runner) `ca_file`, this
        machine's copy of the stack CA, is used instead.
        """
        from pathlib import Path

        recorded = handle.info.get("ca_file")
        if recorded and Path(str(recorded)).is_file():
            ca_file = str(recorded)
        server_name = handle.info.get("tls_server_name")
        return cls(
            handle.url,
            admin_token,
            timeout,
            ca_file=ca_file,
            server_name=str(server_name) if server_name else None,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def healthy(self) -> bool:
        """True when the gateway answers its health check."""
        try:
            response = self._client.get("/-/health", timeout=3.0, extensions=self._extensions)
            return response.status_code == 200
        except httpx.HTTPError:
            return False

    def list_apps(self) -> dict[str, dict[str, Any]]:
        """Live apps by name: revision, fingerprint, auth, options, runners, last_error."""
        body = self._call("GET", "/-/apps", "list apps").json()
        return {a["name"]: a for a in body.get("apps", [])}

    def watch_apps(
        self, seen: str | None, wait: float
    ) -> tuple[dict[str, dict[str, Any]], str | None]:
        """Live apps as `list_apps` has them, and the answer's ETag, once they differ from
        `seen` (an ETag of an earlier answer) or after `wait` seconds, whichever is first.

        The returned ETag is None from a gateway that cannot wait (an older
        skyform): it answered at once, and the caller must pace itself.
        """
        headers = {"If-None-Match": seen} if seen else {}
        read = self._client.timeout.read  # the answer may take `wait` seconds longer
        response = self._call(
            "GET",
            "/-/apps",
            "list apps",
            params={"wait": f"{max(wait, 0.0):.3f}"},
            headers=headers,
            timeout=None if read is None else read + wait,
        )
        apps = {a["name"]: a for a in response.json().get("apps", [])}
        return apps, response.headers.get("etag")

    def put_app(
        self,
        name: str,
        bundle: bytes,
        auth: str,
        env: dict[str, str],
        secrets: dict[str, str] | None = None,
        replace: bool = False,
    ) -> dict[str, Any]:
        """Register (or update) an app revision; returns `{name, revision, fingerprint}`.

        `secrets` travel apart from `env`: the gateway stores them sealed.
        `replace`: new runners even for the same revision (the old ones drain).
        """
        payload: dict[str, Any] = {
            "bundle_b64": base64.b64encode(bundle).decode(),
            "auth": auth,
            "env": env,
            "secrets": secrets or {},
        }
        if replace:  # only when asked: a gateway of an older skyform refuses the field
            payload["replace"] = True
        return self._call(
            "PUT", f"/-/apps/{_segment(name)}", f"register app {name!r}", json=payload
        ).json()

    def delete_app(self, name: str) -> None:
        """Remove an app; an app the gateway does not know is already gone."""
        self._call("DELETE", f"/-/apps/{_segment(name)}", f"remove app {name!r}", ok_missing=True)

    def put_tls(self, cert_pem: str, key_pem: str, public_url: str | None = None) -> dict[str, Any]:
        """Hand the gateway a renewed certificate (and its public URL, once known)."""
        payload: dict[str, Any] = {"cert_pem": cert_pem, "key_pem": key_pem}
        if public_url:
            payload["public_url"] = public_url
        return self._call("PUT", "/-/tls", "replace its certificate", json=payload).json()

    def logs(self, name: str, tail: int = 200, every: bool = False) -> str:
        """The last `tail` log lines of the app's current runners (`every`: old revisions too)."""
        params: dict[str, Any] = {"tail": tail}
        if every:
            params["all"] = 1
        return self._call(
            "GET", f"/-/apps/{_segment(name)}/logs", f"logs of {name!r}", params=params
        ).text

    def _call(
        self, method: str, path: str, what: str, ok_missing: bool = False, **kwargs: Any
    ) -> httpx.Response:
        try:
            response = self._client.request(method, path, extensions=self._extensions, **kwargs)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            # InvalidURL is not an HTTPError: without it here, a bad URL is a traceback.
            raise GatewayError(
                f"gateway {self.url} did not answer ({what}): {type(exc).__name__}: {exc}"
            ) from None
        if ok_missing and response.status_code == 404:
            return response
        if response.status_code >= 400:
            raise GatewayError(
                f"gateway {self.url} refused to {what}: HTTP {response.status_code}: "
                f"{_detail(response)}",
                response.status_code,
            )
        return response


def _segment(name: str) -> str:
    """`name` as one URL path segment: any name the gateway lists can be addressed."""
    return quote(name, safe="")


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300]
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("error") or body
        return str(detail)[:300]
    return str(body)[:300]
