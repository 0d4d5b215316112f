"""The script contract's mapping from a script's value to an HTTP response (pure functions)."""

from __future__ import annotations

import base64
import json
from typing import Any

RESPONSE_KEYS = frozenset({"status", "headers", "body"})

# Request headers that carry credentials. They are dropped at the ingress: never stored in
# the event log (``invocation.requested`` is permanent and readable through /api), never shown
# to scripts (a script authenticates its callers with a header of its own, e.g. a signature
# checked with ``verify_hmac_sha256`` against a secret from ``env``). PiCloud's control-plane
# token travels in ``authorization``; it has no header of its own.
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})


FORWARDING_HEADERS = frozenset({"forwarded", "x-forwarded-for", "x-forwarded-proto",
                                "x-forwarded-host", "x-forwarded-port", "x-real-ip"})


def strip_credentials(headers: dict[str, Any]) -> dict[str, Any]:
    """``headers`` (lower-case names) without the credential headers."""
    return {k: v for k, v in headers.items() if k.lower() not in CREDENTIAL_HEADERS}


def strip_forwarding(headers: dict[str, Any]) -> dict[str, Any]:
    """``headers`` without what a proxy says about the client (not from a trusted proxy)."""
    return {k: v for k, v in headers.items() if k.lower() not in FORWARDING_HEADERS}


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_default).encode()


def _default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _encode_body(body: Any, headers: dict[str, str]) -> bytes:
    if body is None:
        return b""
    if isinstance(body, str):
        headers.setdefault("content-type", "text/plain; charset=utf-8")
        return body.encode()
    if isinstance(body, bytes | bytearray):
        headers.setdefault("content-type", "application/octet-stream")
        return bytes(body)
    headers.setdefault("content-type", "application/json")
    return _json_bytes(body)


# Hop-by-hop headers and the ones that frame the message: the server sets them, a script's
# values are dropped (a wrong content-length or transfer-encoding would break the framing).
FRAMING_HEADERS = frozenset({
    "connection", "content-length", "keep-alive", "proxy-connection", "te", "trailer",
    "transfer-encoding", "upgrade"})
_TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
                         "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


class ResponseError(ValueError):
    """A script's response that HTTP cannot carry (a bad status, header name or value)."""


def _check_header(name: str, value: str) -> None:
    if not name or not set(name) <= _TOKEN_CHARS:
        raise ResponseError(f"invalid response header name {name!r}")
    if any(c in "\r\n\0" for c in value):
        raise ResponseError(f"invalid value for response header {name!r}: "
                            "it contains CR, LF or NUL")


def is_response_map(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and set(value) <= RESPONSE_KEYS
        and ("status" not in value or (isinstance(value["status"], int)
                                       and not isinstance(value["status"], bool)))
    )


def shape_response(value: Any) -> dict[str, Any]:
    """Returns ``{status, headers, body_b64}``: what the HTTP answer will be.

    A string is 200 text/plain; a map whose keys are only ``status``, ``headers`` and ``body``
    is that response (a map or array body is sent as JSON); any other map or array is 200
    JSON; ``()`` is 204. Framing and hop-by-hop headers (``FRAMING_HEADERS``) are dropped.
    Raises :class:`ResponseError` for a status outside 100-599, or a header name that is not
    an HTTP token or a value with CR, LF or NUL: the invocation then fails.
    """
    headers: dict[str, str] = {}
    status = 200
    if value is None:
        status, body = 204, b""
    elif is_response_map(value):
        status = int(value.get("status", 200))
        if not 100 <= status <= 599:
            raise ResponseError(f"invalid response status {status}: it must be 100-599")
        raw_headers = value.get("headers") or {}
        if isinstance(raw_headers, dict):
            for k, v in raw_headers.items():
                name, text = str(k).lower(), str(v)
                _check_header(name, text)
                if name not in FRAMING_HEADERS:
                    headers[name] = text
        body = _encode_body(value.get("body"), headers)
    else:
        body = _encode_body(value, headers)
    return {"status": status, "headers": headers,
            "body_b64": base64.b64encode(body).decode("ascii")}


def response_body(response: dict[str, Any]) -> bytes:
    return base64.b64decode(response.get("body_b64", ""))


def request_to_event(
    method: str, path: str, query: dict[str, str], headers: dict[str, str], body: bytes
) -> dict[str, Any]:
    """The stored (JSON) form of an HTTP request, as ``invocation.requested`` carries it."""
    try:
        text: str | None = body.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    stored: dict[str, Any] = {"method": method, "path": path, "query": query,
                              "headers": headers}
    if text is None:
        stored["body_b64"] = base64.b64encode(body).decode("ascii")
    else:
        stored["body"] = text
    return stored


def request_to_script(stored: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``request`` variable a script sees, from the stored form."""
    if stored is None:
        return None
    body: Any
    parsed: Any = None
    if "body_b64" in stored:
        body = base64.b64decode(stored["body_b64"])
    else:
        body = stored.get("body", "")
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
    return {
        "method": stored.get("method", "GET"),
        "path": stored.get("path", ""),
        "query": dict(stored.get("query") or {}),
        "headers": dict(stored.get("headers") or {}),
        "body": body,
        "json": parsed,
    }
