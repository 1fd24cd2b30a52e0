"""A small client for the gateway's admin API (`/-/...`, bearer admin token).

`plan` refreshes through it (which apps and revisions are live), `apply`
registers and removes app revisions, `status` and `logs` read from it. Every
failure becomes one `GatewayError` line naming the gateway and what was asked.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx

from skyform.errors import SkyformError


class GatewayError(SkyformError):
    """The gateway did not answer, or refused an admin call (`status`: its HTTP status)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class GatewayClient:
    """Admin calls to one stack's gateway."""

    def __init__(self, url: str, admin_token: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=timeout,
            trust_env=False,
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
            return self._client.get("/-/health", timeout=3.0).status_code == 200
        except httpx.HTTPError:
            return False

    def list_apps(self) -> dict[str, dict[str, Any]]:
        """Live apps by name: revision, fingerprint, auth, options, runners, last_error."""
        body = self._call("GET", "/-/apps", "list apps").json()
        return {a["name"]: a for a in body.get("apps", [])}

    def put_app(
        self,
        name: str,
        bundle: bytes,
        auth: str,
        env: dict[str, str],
        secrets: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """Register (or update) an app revision; returns `{name, revision, fingerprint}`.

        `secrets` travel apart from `env`: the gateway stores them sealed.
        """
        payload = {
            "bundle_b64": base64.b64encode(bundle).decode(),
            "auth": auth,
            "env": env,
            "secrets": secrets or {},
        }
        return self._call("PUT", f"/-/apps/{name}", f"register app {name}", json=payload).json()

    def delete_app(self, name: str) -> None:
        """Remove an app; an app the gateway does not know is already gone."""
        self._call("DELETE", f"/-/apps/{name}", f"remove app {name}", ok_missing=True)

    def logs(self, name: str, tail: int = 200) -> str:
        return self._call(
            "GET", f"/-/apps/{name}/logs", f"logs of {name}", params={"tail": tail}
        ).text

    def _call(
        self, method: str, path: str, what: str, ok_missing: bool = False, **kwargs: Any
    ) -> httpx.Response:
        try:
            response = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
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


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300]
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("error") or body
        return str(detail)[:300]
    return str(body)[:300]
