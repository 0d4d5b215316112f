"""Bearer tokens: stored hashed (sha256); scopes ``read`` < ``write`` < ``admin``, and for
calling scripts that require a key, ``invoke`` (any script, also implied by ``write``) or
``invoke:NAME`` (that script only)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any

SCOPES = ("read", "write", "admin", "invoke")
IMPLIED = {"admin": {"admin", "write", "read", "invoke"}, "write": {"write", "read", "invoke"},
           "read": {"read"}, "invoke": {"invoke"}}
INVOKE_ONE = re.compile(r"^invoke:[a-z0-9][a-z0-9-]{0,62}$")


def valid_scope(scope: Any) -> bool:
    return isinstance(scope, str) and (scope in SCOPES or bool(INVOKE_ONE.match(scope)))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return "pc_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    actor: str
    scopes: frozenset[str]

    def allows(self, scope: str) -> bool:
        return any(scope in IMPLIED.get(s, {s}) for s in self.scopes)

    def may_invoke(self, script: str) -> bool:
        return self.allows("invoke") or f"invoke:{script}" in self.scopes


class AuthError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    kind, _, value = header.partition(" ")
    if kind.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


async def authenticate(conn: Any, header: str | None, admin_hash: str | None) -> Principal:
    token = bearer(header)
    if token is None:
        raise AuthError(401, "missing bearer token")
    digest = hash_token(token)
    if admin_hash is not None and hmac.compare_digest(digest, admin_hash):
        return Principal("admin", frozenset({"admin"}))
    cur = await conn.execute(
        "SELECT id, name, scopes FROM api_tokens WHERE token_hash = %s AND revoked_at IS NULL",
        (digest,),
    )
    row = await cur.fetchone()
    if row is None:
        raise AuthError(401, "invalid or revoked token")
    _token_id, name, scopes = row
    return Principal(f"token:{name}", frozenset(scopes or ()))
