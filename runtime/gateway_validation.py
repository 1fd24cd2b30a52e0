"""Request bodies checked at the gateway, before anything is queued.

A queued request that cannot succeed should fail at submit, not as a 202 that
fails minutes later once a runner has started. The gateway has each app's
OpenAPI schema (from its bundle), so it checks, per endpoint:

- size: a body over the app's `max_body_mb` is refused with 413 (also for
  synchronous calls; the `content-length` header is checked before reading);
- content type: an endpoint that takes a JSON body refuses any other type with
  415, saying what to send; a body without a content type is taken as JSON
  when it parses as JSON, else refused with a message that says the header
  is missing;
- for queue submissions, the JSON body against the endpoint's request schema
  (JSON Schema 2020-12, which OpenAPI 3.1 uses; `jsonschema`): invalid -> 422
  with FastAPI's error shape, `{"detail": [{"loc", "msg", "type"}]}`. Bodies
  over `VALIDATE_MAX_BYTES` are passed on unchecked (the runner validates
  them): parsing tens of megabytes would stall the gateway's event loop and
  hold a second copy of the body in memory.

Multipart and form bodies are passed on as they are (the runner parses them).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

JSON_TYPE = "application/json"
_MIB = 1024 * 1024
VALIDATE_MAX_BYTES = _MIB


class BodyRefused(Exception):
    """A body the gateway refuses: `status` and a `detail` (a string or FastAPI's list)."""

    def __init__(self, status: int, detail: Any, error_type: str) -> None:
        super().__init__(str(detail))
        self.status = status
        self.detail = detail
        self.error_type = error_type


@dataclass(frozen=True)
class BodyRule:
    """What one endpoint takes: its body's content types and a validator of its JSON form."""

    content_types: tuple[str, ...]
    validator: Any  # a jsonschema validator, or None when there is no JSON body schema

    @property
    def json_only(self) -> bool:
        return self.content_types == (JSON_TYPE,)


class BodyRules:
    """The body rules of one app's endpoints, built lazily from its OpenAPI document."""

    def __init__(self, openapi: dict[str, Any], max_body_mb: float) -> None:
        self._openapi = openapi
        self._rules: dict[tuple[str, str], BodyRule | None] = {}
        self.max_body_mb = max_body_mb
        self.max_bytes = int(max_body_mb * _MIB)

    def rule(self, path: str, method: str) -> BodyRule | None:
        key = (path, method.lower())
        if key not in self._rules:
            self._rules[key] = self._build(*key)
        return self._rules[key]

    def _build(self, path: str, method: str) -> BodyRule | None:
        operation = self._openapi.get("paths", {}).get(path, {}).get(method)
        if not isinstance(operation, dict) or "requestBody" not in operation:
            return None
        content = operation["requestBody"].get("content", {})
        schema = content.get(JSON_TYPE, {}).get("schema")
        validator = None
        if schema is not None:
            from jsonschema import Draft202012Validator

            root = {**schema, "components": self._openapi.get("components", {})}
            validator = Draft202012Validator(root)
        return BodyRule(tuple(content), validator)

    def check_size(self, declared: str | None) -> None:
        """Refuse (413) a body whose declared length is over the app's limit."""
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise self.too_large()

    def too_large(self) -> BodyRefused:
        return BodyRefused(
            413,
            f"request body is larger than this app's limit of {self.max_body_mb:g} MiB "
            "(the app's max_body_mb option)",
            "body_too_large",
        )


def check_body(
    rule: BodyRule | None, content_type: str | None, body: bytes, validate: bool
) -> str | None:
    """Check one body against its endpoint's rule; the content type to forward (None: as given)."""
    if rule is None or not rule.json_only:
        return None
    media = (content_type or "").split(";", 1)[0].strip().lower()
    parsed: Any = None
    small = len(body) <= VALIDATE_MAX_BYTES
    if not media and not small:
        content_type = JSON_TYPE  # too big to look into: taken as the JSON it should be
    elif not media:
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            raise BodyRefused(
                415,
                "the request has no Content-Type and its body is not JSON; this endpoint "
                "takes a JSON body: send Content-Type: application/json",
                "unsupported_media_type",
            ) from None
        content_type = JSON_TYPE
    elif media != JSON_TYPE and not media.endswith("+json"):
        raise BodyRefused(
            415,
            f"this endpoint takes a JSON body (Content-Type: application/json), got {media}",
            "unsupported_media_type",
        )
    if validate and small and rule.validator is not None:
        if parsed is None:
            try:
                parsed = json.loads(body)
            except ValueError as exc:
                raise BodyRefused(
                    422,
                    [{"loc": ["body"], "msg": f"invalid JSON: {exc}", "type": "json_invalid"}],
                    "validation_error",
                ) from None
        errors = sorted(rule.validator.iter_errors(parsed), key=lambda e: list(e.absolute_path))
        if errors:
            detail = [
                {
                    "loc": ["body", *e.absolute_path],
                    "msg": e.message,
                    "type": str(e.validator),
                }
                for e in errors
            ]
            raise BodyRefused(422, detail, "validation_error")
    return content_type
