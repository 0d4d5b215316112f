"""Host functions: Python functions a Rhai script can call (ABI `host_call`/`host_result`).

A host function is registered with a name and an arity and receives plain Python values
(see :mod:`picloud.workers.typed`: a Rhai string arrives as ``str``, a blob as ``bytes``,
a map as ``dict``...). What it returns is converted back to a Rhai value. To fail, it raises
:class:`HostError` (the script sees a catchable ``ErrorRuntime`` with the message) or
:class:`HostLimitError` (the invocation ends with a ``limit`` error). Any other exception is
reported to the script the same way as a :class:`HostError`, naming the function; nothing
raised by a host function ever propagates through wasmtime.

The defaults follow the script contract in PICLOUD.md: ``sha256``, ``hmac_sha256``,
``verify_hmac_sha256``, ``base64_encode``, ``base64_decode``, ``uuid``, ``now``, and
``log(value)``, which adds a line of stream ``"log"`` to the invocation's logs (a string as
is, any other value as JSON, blobs in base64), counted against the output limit like
``print``.

While a host function runs, :func:`current` gives the invocation it runs for
(:class:`Invocation`): its deadline (:meth:`Invocation.remaining_s`; the epoch cannot
interrupt Python code, so a slow host function must bound its own time with it) and its log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import threading
import time
import uuid as uuid_mod
from collections.abc import Callable, Iterator
from typing import Any

import msgspec

HostFn = Callable[..., Any]


class Invocation:
    """What a host function may know of the invocation it runs for (see :func:`current`)."""

    def __init__(self, deadline: float, log: Callable[[str], bool]) -> None:
        self.deadline = deadline  # time.monotonic() value
        self._log = log

    def remaining_s(self) -> float:
        """Seconds left before the invocation's wall-clock limit."""
        return max(0.0, self.deadline - time.monotonic())

    def log(self, text: str) -> None:
        """Adds a `log` line; raises HostLimitError past the output limit."""
        if not self._log(text):
            raise HostLimitError("Output limit reached", "ErrorTooMuchOutput")


_current = threading.local()


def current() -> Invocation | None:
    """The invocation the calling host function runs for (None outside one)."""
    inv: Invocation | None = getattr(_current, "invocation", None)
    return inv


def set_current(inv: Invocation | None) -> Invocation | None:
    """Used by the sandbox around a run; returns the previous value to restore."""
    previous = current()
    _current.invocation = inv
    return previous


class HostError(Exception):
    """Raised by a host function: the script gets a runtime error with this message."""


class HostLimitError(HostError):
    """Raised by a host function to end the invocation with a `limit` error."""

    def __init__(self, message: str, type: str = "ErrorHostLimit") -> None:
        super().__init__(message)
        self.type = type


class HostFunctions:
    """A set of host functions, keyed by (name, arity)."""

    def __init__(self) -> None:
        self._fns: dict[tuple[str, int], HostFn] = {}

    def register(self, name: str, arity: int, fn: HostFn) -> HostFunctions:
        """Adds (or replaces) `name` with `arity` arguments; returns self for chaining."""
        if not name.isidentifier() or arity < 0:
            raise ValueError(f"bad host function {name!r}/{arity}")
        self._fns[(name, arity)] = fn
        return self

    def copy(self) -> HostFunctions:
        other = HostFunctions()
        other._fns = dict(self._fns)
        return other

    def lookup(self, name: str, arity: int) -> HostFn | None:
        return self._fns.get((name, arity))

    def signatures(self) -> list[dict[str, Any]]:
        """The `host_functions` list of a `pi_eval` request."""
        return [{"name": n, "arity": a} for (n, a) in sorted(self._fns)]

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return iter(sorted(self._fns))

    def __len__(self) -> int:
        return len(self._fns)


def _as_bytes(fn: str, what: str, v: Any) -> bytes:
    if isinstance(v, str):
        return v.encode("utf-8")
    if isinstance(v, bytes):
        return v
    raise HostError(f"{fn}: {what} must be a string or a blob, not {_rhai_type(v)}")


def _rhai_type(v: Any) -> str:
    if v is None:
        return "()"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "i64"
    if isinstance(v, float):
        return "f64"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "map"
    return type(v).__name__


def sha256(data: Any) -> str:
    return hashlib.sha256(_as_bytes("sha256", "data", data)).hexdigest()


def hmac_sha256(key: Any, data: Any) -> str:
    k = _as_bytes("hmac_sha256", "key", key)
    return hmac.new(k, _as_bytes("hmac_sha256", "data", data), hashlib.sha256).hexdigest()


def verify_hmac_sha256(key: Any, data: Any, expected_hex: Any) -> bool:
    if not isinstance(expected_hex, str):
        raise HostError("verify_hmac_sha256: the signature must be a hex string")
    k = _as_bytes("verify_hmac_sha256", "key", key)
    mac = hmac.new(k, _as_bytes("verify_hmac_sha256", "data", data), hashlib.sha256).digest()
    try:
        given = bytes.fromhex(expected_hex)
    except ValueError:
        given = b""
    # compare_digest's time depends only on the lengths, not on where the bytes differ.
    return hmac.compare_digest(mac, given)


def base64_encode(data: Any) -> str:
    return base64.b64encode(_as_bytes("base64_encode", "data", data)).decode("ascii")


def base64_decode(text: Any) -> bytes:
    if not isinstance(text, str):
        raise HostError(f"base64_decode: expects a string, not {_rhai_type(text)}")
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise HostError(f"base64_decode: invalid base64 ({exc})") from None


def log(value: Any) -> None:
    inv = current()
    if inv is None:
        raise HostError("log: no invocation is running")
    if isinstance(value, str):
        text = value
    else:
        text = msgspec.json.encode(value, enc_hook=_log_default).decode()
    inv.log(text)


def _log_default(v: Any) -> Any:
    return str(v)  # a function pointer: its name


def uuid() -> str:
    return str(uuid_mod.uuid4())


def now() -> int:
    return time.time_ns() // 1_000_000


_DEFAULTS = (
    HostFunctions()
    .register("sha256", 1, sha256)
    .register("hmac_sha256", 2, hmac_sha256)
    .register("verify_hmac_sha256", 3, verify_hmac_sha256)
    .register("base64_encode", 1, base64_encode)
    .register("base64_decode", 1, base64_decode)
    .register("uuid", 0, uuid)
    .register("now", 0, now)
    .register("log", 1, log)
)


def default_host_functions() -> HostFunctions:
    """A fresh copy of the default set; register more functions on it as needed."""
    return _DEFAULTS.copy()
