"""The wasmtime sandbox: runs one Rhai script invocation in a fresh engine instance.

The Rhai engine is ``picloud/workers/engine.wasm`` (built from ``engine/``); its whole
interface is ``engine/ABI.md``. This module is the host side of that contract.

Per process
    The module is compiled once and the compiled artifact is cached on disk (keyed by the
    wasm's sha256, the wasmtime version and the engine configuration) under
    ``$PICLOUD_HOME/cache`` when ``PICLOUD_HOME`` is set, else ``$XDG_CACHE_HOME/picloud``
    (``~/.cache/picloud``); the file is mapped into memory, so it is only ever replaced by a
    rename, never rewritten in place. It is linked once (WASI + the ``picloud`` imports) into an
    ``InstancePre``. :func:`get_engine` returns the one :class:`Engine` of the process; its
    :meth:`Engine.run` may be called from several threads at once. ``PICLOUD_ENGINE_WASM``
    names another engine build to load instead of the packaged one.

Per invocation
    A fresh ``Store`` and instance, so nothing survives from one invocation to the next, with
    the invocation's :class:`Limits`:

    * ``fuel`` — wasmtime fuel; running out ends the script with ``ErrorTooManyOperations``;
    * ``timeout_s`` — wall clock, by epoch interruption: one timer thread (started on first
      use) sleeps until the earliest pending deadline and only then increments the engine's
      epoch; each running store's epoch callback then checks its own deadline and either
      continues or ends with ``ErrorTimeout``. Nothing wakes while no deadline is due;
    * ``memory_bytes`` — the store's linear-memory limit; a denied growth makes the engine's
      allocator fail, reported as ``ErrorMemoryLimit``;
    * ``output_bytes`` — the bytes of ``print``/``debug`` text; the ``output`` import answers 1
      once they are exceeded and the engine ends the script with ``ErrorTooMuchOutput``.

    A wasm stack exhaustion is ``ErrorStackOverflow``. All of these are :class:`ScriptError`
    with ``kind == "limit"`` in the :class:`RunResult`; no trap escapes as an exception. The
    engine's own uncatchable errors (``ErrorStackOverflow`` at Rhai's call depth 64,
    ``ErrorTooMuchOutput``, ``ErrorDataTooLarge``...) are reported as ``limit`` too
    (``LIMIT_TYPES``). A trap that is no limit (an engine bug) is a ``runtime`` error of type
    ``ErrorEngineFault`` with the engine's panic message; the next invocation is unaffected.
    The timer thread is restarted in a forked child.

Host functions
    Script-callable Python functions travel in the ABI's ``host_call``/``host_result`` pair.
    Build a :class:`~picloud.workers.host.HostFunctions` (start from
    :func:`~picloud.workers.host.default_host_functions`), ``register(name, arity, fn)`` more
    (``kv_get``, ``env``, ``http_request``, ``emit``... are added this way, per invocation if
    they need the invocation's context: closures over the script name work), and pass it as
    ``host=``. The names and arities are sent to the engine with each request; a call
    reaches ``fn(*args)`` with plain Python arguments (:mod:`picloud.workers.typed`) and its
    return value goes back as a Rhai value. ``fn`` raises
    :class:`~picloud.workers.host.HostError` for a catchable ``ErrorRuntime`` in the
    script, :class:`~picloud.workers.host.HostLimitError` to end the invocation with a
    ``limit`` error; any other exception is caught and reported like a ``HostError``
    (wasmtime-py keeps exceptions raised through it in a module-wide global, so none may).
    Host functions run on the invoking thread while the instance waits; the epoch cannot
    interrupt Python code, so a slow host function (``http_request``) must bound its own time.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import hashlib
import heapq
import importlib.metadata
import itertools
import os
import re
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import wasmtime
from wasmtime import _ffi as wffi

from picloud.workers import host as hostlib
from picloud.workers.host import (
    HostError,
    HostFunctions,
    HostLimitError,
    default_host_functions,
)
from picloud.workers.typed import TypedValueError, from_typed, to_typed

__all__ = [
    "Engine",
    "HostError",
    "HostFunctions",
    "HostLimitError",
    "Limits",
    "LogLine",
    "RunResult",
    "ScriptError",
    "default_host_functions",
    "get_engine",
]

WASM_PATH = Path(__file__).with_name("engine.wasm")
# The engine's deepest Rust recursion (Rhai's call depth 64, expression depth 64) must fit;
# wasm runs on the calling thread's native stack, and Python threads get 8 MiB by default.
MAX_WASM_STACK = 2 << 20
# Rhai's errors that a script cannot catch because a limit ended it: reported as kind "limit"
# whichever kind the engine gave them (Rhai itself calls ErrorStackOverflow a runtime error).
LIMIT_TYPES = frozenset(
    {
        "ErrorStackOverflow",
        "ErrorTooManyOperations",
        "ErrorTooMuchOutput",
        "ErrorDataTooLarge",
        "ErrorTerminated",
        "ErrorTimeout",
        "ErrorMemoryLimit",
    }
)
MODES = ("script", "expression", "parse", "parse_expression")


@dataclass(frozen=True)
class Limits:
    """Per-invocation limits."""

    # wasmtime fuel: about one unit per WebAssembly instruction the engine executes. Measured
    # with bench/engine.py on a 2-core x86_64 box: 5.6-6.7 billion units per second of compute,
    # so the default (8-9 s there) leaves the wall-clock timeout the usual binding limit.
    fuel: int = 50_000_000_000
    timeout_s: float = 5.0  # wall clock (epoch interruption)
    memory_bytes: int = 64 << 20  # linear memory (store limits)
    output_bytes: int = 64 << 10  # print/debug output


class ScriptError(msgspec.Struct):
    kind: str  # "parse" | "runtime" | "limit"
    type: str  # Rhai's variant name (ErrorArithmetic, MalformedIndexExpr, ErrorTimeout...)
    message: str
    line: int
    column: int


class LogLine(msgspec.Struct):
    stream: str  # "print" | "debug" | "log" (the `log` host function)
    text: str


class RunResult(msgspec.Struct):
    ok: bool
    value: Any  # plain Python (see picloud.workers.typed)
    typed: Any  # the ABI's typed JSON value; None when not ok
    logs: list[LogLine]
    error: ScriptError | None
    fuel_used: int
    duration_ms: float


# ---------------------------------------------------------------------------------------------
# The epoch timer: one thread, a deadline heap, no periodic wake-up.


class _DeadlineTimer:
    """Increments the engine epoch when, and only when, some registered deadline passes."""

    def __init__(self, engine: wasmtime.Engine) -> None:
        self._engine = engine
        self._cond = threading.Condition(threading.Lock())
        self._heap: list[tuple[float, int]] = []
        self._live: set[int] = set()
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None
        self.ticks = 0  # epoch increments so far (for tests and metrics)
        # A forked child has no timer thread (and maybe a lock held by it): start afresh.
        ref = weakref.WeakMethod(self._reset)
        os.register_at_fork(after_in_child=lambda: (m := ref()) is not None and m())

    def _reset(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._heap = []
        self._live = set()
        self._thread = None

    def add(self, deadline: float) -> int:
        with self._cond:
            token = next(self._ids)
            self._live.add(token)
            wake = not self._heap or deadline < self._heap[0][0]
            heapq.heappush(self._heap, (deadline, token))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="picloud-epoch", daemon=True
                )
                self._thread.start()
            elif wake:
                self._cond.notify()
            return token

    def remove(self, token: int) -> None:
        with self._cond:
            self._live.discard(token)
            # Cancelled entries are dropped lazily; rebuild when they dominate the heap.
            if len(self._heap) > 64 and len(self._live) * 2 < len(self._heap):
                self._heap = [e for e in self._heap if e[1] in self._live]
                heapq.heapify(self._heap)

    def _loop(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][1] not in self._live:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                delay = self._heap[0][0] - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    _, token = heapq.heappop(self._heap)
                    self._live.discard(token)
                self.ticks += 1
                self._engine.increment_epoch()


# ---------------------------------------------------------------------------------------------
# Per-invocation state, reached from the import callbacks through a thread-local: wasm runs on
# the thread that called it, so the callback of an invocation runs on that invocation's thread.


class _Invocation:
    __slots__ = (
        "deadline",
        "fuel_left",
        "host",
        "host_limit",
        "logs",
        "memory",
        "mref",
        "out_bytes",
        "out_limit",
        "out_over",
        "reply",
        "stderr",
        "timed_out",
    )

    def __init__(self, limits: Limits, host: HostFunctions, deadline: float) -> None:
        self.host = host
        self.deadline = deadline
        self.out_limit = limits.output_bytes
        self.out_bytes = 0
        self.out_over = False
        self.logs: list[LogLine] = []
        self.reply = b""
        self.memory: wasmtime.Memory | None = None
        self.mref = 0  # address of the memory's wasmtime_memory_t, for the C API
        self.timed_out = False
        self.fuel_left: int | None = None  # read in the epoch callback when it ends the run
        self.host_limit: ScriptError | None = None
        self.stderr = bytearray()  # the guest's WASI stderr, read after a trap

    def add_log(self, text: str) -> bool:
        """A `log` line from the host side; False (and nothing kept) past the output limit."""
        self.out_bytes += len(text.encode("utf-8"))
        if self.out_bytes > self.out_limit:
            self.out_over = True
            return False
        self.logs.append(LogLine("log", text))
        return True


_tls = threading.local()
_ENC = msgspec.json.Encoder()
_DEC = msgspec.json.Decoder()


# The imports are "unchecked" wasmtime functions with ctypes callbacks: the arguments (and the
# result, in slot 0) are raw 16-byte values, and the guest memory is reached through the C API.
# This avoids wasmtime-py's generic trampoline (type objects and value boxing on every call),
# which costs tens of microseconds per `print`. Each callback catches everything: returning a
# trap pointer of 0 means success, and nothing may propagate through wasmtime.

_caller_context = wffi.dll["wasmtime_caller_context"]
_caller_context.restype = ctypes.c_void_p
_caller_context.argtypes = [ctypes.c_void_p]
_memory_data = wffi.dll["wasmtime_memory_data"]
_memory_data.restype = ctypes.c_void_p
_memory_data.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
_memory_data_size = wffi.dll["wasmtime_memory_data_size"]
_memory_data_size.restype = ctypes.c_size_t
_memory_data_size.argtypes = [ctypes.c_void_p, ctypes.c_void_p]

_Raw = ctypes.POINTER(wffi.wasmtime_val_raw_t)
_RawCallback = ctypes.CFUNCTYPE(
    ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p, _Raw, ctypes.c_size_t
)


def _span(caller: int, inv: _Invocation) -> tuple[int, int]:
    """(host address, size) of the guest's linear memory, read once per import call (a
    memory.grow may move it between calls)."""
    if inv.mref == 0:
        raise RuntimeError("memory not bound")
    ctx = _caller_context(caller)
    return _memory_data(ctx, inv.mref), _memory_data_size(ctx, inv.mref)


def _at(span: tuple[int, int], ptr: int, length: int) -> int:
    """The host address of guest bytes [ptr, ptr + length), bounds-checked."""
    ptr &= 0xFFFFFFFF
    if length < 0 or ptr + length > span[1]:
        raise RuntimeError("guest pointer out of bounds")
    return span[0] + ptr


def _raw_output(_env: int, caller: int, args: Any, _n: int) -> int:
    answer = 1
    try:
        inv: _Invocation | None = getattr(_tls, "inv", None)
        if inv is not None:
            kind, ptr, length = args[0].i32, args[1].i32, args[2].i32
            inv.out_bytes += length
            if inv.out_bytes > inv.out_limit:
                inv.out_over = True
            else:
                text = ctypes.string_at(_at(_span(caller, inv), ptr, length), length)
                inv.logs.append(
                    LogLine("debug" if kind == 1 else "print", text.decode("utf-8", "replace"))
                )
                answer = 0
    except BaseException:
        answer = 1
    args[0].i32 = answer
    return 0


def _host_reply(inv: _Invocation, name: str, raw_args: bytes) -> bytes:
    try:
        args = _DEC.decode(raw_args)
        fn = inv.host.lookup(name, len(args))
        if fn is None:
            return _ENC.encode({"error": f"no host function {name} with {len(args)} arguments"})
        result = fn(*[from_typed(a) for a in args])
        return _ENC.encode({"ok": to_typed(result)})
    except HostLimitError as exc:
        inv.host_limit = ScriptError("limit", exc.type, str(exc), 0, 0)
        return _ENC.encode({"error": str(exc), "limit": True, "type": exc.type})
    except HostError as exc:
        return _ENC.encode({"error": str(exc)})
    except TypedValueError as exc:
        return _ENC.encode({"error": f"{name}: {exc}"})
    except Exception as exc:
        return _ENC.encode({"error": f"{name} failed: {type(exc).__name__}: {exc}"})


def _raw_host_call(_env: int, caller: int, args: Any, _n: int) -> int:
    length = 0
    try:
        inv: _Invocation | None = getattr(_tls, "inv", None)
        if inv is not None:
            np, nl, ap, al = args[0].i32, args[1].i32, args[2].i32, args[3].i32
            try:
                span = _span(caller, inv)
                name = ctypes.string_at(_at(span, np, nl), nl).decode("utf-8")
                raw = ctypes.string_at(_at(span, ap, al), al)
            except Exception as exc:
                inv.reply = _ENC.encode({"error": f"bad host call: {exc}"})
            else:
                inv.reply = _host_reply(inv, name, raw)
            length = len(inv.reply)
    except BaseException:
        length = 0
    args[0].i32 = length
    return 0


def _raw_host_result(_env: int, caller: int, args: Any, _n: int) -> int:
    try:
        inv: _Invocation | None = getattr(_tls, "inv", None)
        if inv is not None:
            data = inv.reply
            ctypes.memmove(_at(_span(caller, inv), args[0].i32, len(data)), data, len(data))
    except BaseException:
        pass
    return 0


_OUTPUT_CB = _RawCallback(_raw_output)
_HOST_CALL_CB = _RawCallback(_raw_host_call)
_HOST_RESULT_CB = _RawCallback(_raw_host_result)


# The epoch-deadline callback: C signature
#   wasmtime_error_t* cb(wasmtime_context_t*, void* env, uint64_t* delta, uint8_t* kind)
_EpochCallback = ctypes.CFUNCTYPE(
    ctypes.c_size_t,
    ctypes.POINTER(wffi.wasmtime_context_t),
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.POINTER(ctypes.c_uint8),
)
_TIMEOUT_MSG = b"picloud: wall-clock limit reached"


def _on_epoch(_ctx: Any, _env: Any, delta: Any, kind: Any) -> int:
    inv: _Invocation | None = getattr(_tls, "inv", None)
    if inv is not None and time.monotonic() < inv.deadline:
        delta[0] = 1
        kind[0] = 0  # WASMTIME_UPDATE_DEADLINE_CONTINUE
        return 0
    if inv is not None:
        inv.timed_out = True
        # The store's fuel counter is not written back when the callback's error unwinds
        # the call, so read what is left now.
        left = ctypes.c_uint64()
        if not wffi.wasmtime_context_get_fuel(_ctx, ctypes.byref(left)):
            inv.fuel_left = left.value
    err = wffi.wasmtime_error_new(ctypes.create_string_buffer(_TIMEOUT_MSG))
    return ctypes.cast(err, ctypes.c_void_p).value or 0


_EPOCH_CB = _EpochCallback(_on_epoch)
_NO_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(0)


# ---------------------------------------------------------------------------------------------


# (name, param widths, result widths) of the exports, per engine/ABI.md.
_ABI_EXPORTS = (
    ("pi_alloc", (32,), (32,)),
    ("pi_eval", (32, 32), (64,)),
    ("pi_analyze", (32, 32), (64,)),
)


def _raise_on(err: Any, trap: Any) -> None:
    if err:
        raise wasmtime.WasmtimeError._from_ptr(err)
    if trap:
        raise wasmtime.Trap._from_ptr(trap)


def _cache_dir() -> Path:
    home = os.environ.get("PICLOUD_HOME")
    if home:
        return Path(home) / "cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "picloud"


def _prune_cache(cache_dir: Path, keep: Path, max_files: int = 4) -> None:
    """Drops the oldest compiled engines beyond `max_files` (other builds, other wasmtime
    versions). Unlinking is safe for processes that still map a file: the mapping stays."""
    files = sorted(
        (p for p in cache_dir.glob("engine-*.cwasm") if p != keep),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in files[max_files - 1 :]:
        with contextlib.suppress(OSError):
            old.unlink()
    for tmp in cache_dir.glob("engine-*.cwasm.*.tmp"):
        with contextlib.suppress(OSError):
            if time.time() - tmp.stat().st_mtime > 3600:
                tmp.unlink()


def _remove_folder(pid: int, folder: str) -> None:
    if os.getpid() == pid:
        shutil.rmtree(folder, ignore_errors=True)


def _limit(type_: str, message: str) -> ScriptError:
    return ScriptError("limit", type_, message, 0, 0)


class Engine:
    """The Rhai engine of this process: a compiled, linked module ready to instantiate."""

    def __init__(self, wasm_path: Path | str | None = None, cache_dir: Path | None = None) -> None:
        t0 = time.perf_counter()
        if wasm_path is None:
            wasm_path = os.environ.get("PICLOUD_ENGINE_WASM") or WASM_PATH
        path = Path(wasm_path)
        wasm = path.read_bytes()
        self.wasm_sha256 = hashlib.sha256(wasm).hexdigest()
        config = wasmtime.Config()
        config.consume_fuel = True
        config.epoch_interruption = True
        config.max_wasm_stack = MAX_WASM_STACK
        self._engine = wasmtime.Engine(config)
        self.cache_hit = False
        self.cache_path: Path | None = None
        self._module = self._load(wasm, cache_dir if cache_dir is not None else _cache_dir())
        linker = wasmtime.Linker(self._engine)
        linker.define_wasi()
        i32 = wasmtime.ValType.i32()
        self._import_types = []
        for name, ty, cb in (
            ("output", wasmtime.FuncType([i32, i32, i32], [i32]), _OUTPUT_CB),
            ("host_call", wasmtime.FuncType([i32, i32, i32, i32], [i32]), _HOST_CALL_CB),
            ("host_result", wasmtime.FuncType([i32], []), _HOST_RESULT_CB),
        ):
            self._import_types.append(ty)
            err = wffi.wasmtime_linker_define_func_unchecked(
                linker.ptr(),
                ctypes.create_string_buffer(b"picloud"),
                7,
                ctypes.create_string_buffer(name.encode()),
                len(name),
                ty.ptr(),
                ctypes.cast(cb, wffi.wasmtime_func_unchecked_callback_t),
                None,
                _NO_FINALIZER,
            )
            if err:
                raise wasmtime.WasmtimeError._from_ptr(err)
        self._pre = linker.instantiate_pre(self._module)
        self._linker = linker
        exports = {e.name: e.type for e in self._module.exports}
        self._has_initialize = "_initialize" in exports
        self.exports = frozenset(exports)
        # Exports are called "unchecked" (raw values, no per-call type lookups), so their
        # types are checked once here against engine/ABI.md.
        i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
        for name, params, results in _ABI_EXPORTS:
            fty = exports.get(name)
            if name == "pi_analyze" and fty is None:
                continue
            if not (
                isinstance(fty, wasmtime.FuncType)
                and [str(t) for t in fty.params] == [str(i32 if p == 32 else i64) for p in params]
                and [str(t) for t in fty.results] == [str(i32 if r == 32 else i64) for r in results]
            ):
                raise RuntimeError(f"{path}: export {name} missing or not as in engine/ABI.md")
        mem_type = exports.get("memory")
        if not isinstance(mem_type, wasmtime.MemoryType):
            raise RuntimeError(f"{path}: no exported memory")
        # The engine's linear memory starts at this size (its shadow stack and data), so a
        # memory limit below it can never run anything.
        self.initial_memory_bytes = mem_type.limits.min * 65536
        self._names = {
            n: ctypes.create_string_buffer(n.encode())
            for n in ("memory", "_initialize", "pi_alloc", "pi_eval", "pi_analyze")
        }
        self._timer = _DeadlineTimer(self._engine)
        # The guest's stderr (where Rust reports a failed allocation or a panic before it
        # traps) goes to a per-thread file, not to a Python callback: wasmtime writes WASI
        # output from its own tokio threads, and a Python callback there can still be running
        # (or be dropped) while the interpreter shuts down, which aborts with a Rust panic.
        self._stderr_dir: tuple[int, str] | None = None  # (pid, folder)
        self._stderr_lock = threading.Lock()
        self._tls = threading.local()
        self._default_host = default_host_functions()
        self.startup_ms = (time.perf_counter() - t0) * 1000

    def _load(self, wasm: bytes, cache_dir: Path) -> wasmtime.Module:
        version = importlib.metadata.version("wasmtime")
        key = hashlib.sha256(
            f"{self.wasm_sha256}:wasmtime-{version}:fuel+epoch:stack{MAX_WASM_STACK}".encode()
        ).hexdigest()[:32]
        path = cache_dir / f"engine-{key}.cwasm"
        self.cache_path = path
        if path.is_file():
            try:
                module = wasmtime.Module.deserialize_file(self._engine, str(path))
                self.cache_hit = True
                return module
            except wasmtime.WasmtimeError:
                pass  # stale or corrupt: compile again and overwrite
        module = wasmtime.Module(self._engine, wasm)
        try:
            cache_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_bytes(module.serialize())
            os.replace(tmp, path)
            _prune_cache(cache_dir, keep=path)
        except OSError:
            self.cache_path = None  # an unwritable cache only costs a compile per process
        return module

    @property
    def epoch_ticks(self) -> int:
        """How many times the timer thread has incremented the epoch."""
        return self._timer.ticks

    # -----------------------------------------------------------------------------------------

    def run(
        self,
        source: str,
        *,
        mode: str = "script",
        vars: Mapping[str, Any] | None = None,
        limits: Limits = Limits(),
        host: HostFunctions | None = None,
        typed_vars: Mapping[str, Any] | None = None,
    ) -> RunResult:
        """Runs `source` in a fresh instance. `vars` are plain Python values; `typed_vars`
        are already in the ABI's typed form (for a `char`, say) and win on a name clash."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        tv: dict[str, Any] = {k: to_typed(v) for k, v in (vars or {}).items()}
        if typed_vars:
            tv.update(typed_vars)
        hf = self._default_host if host is None else host
        request = _ENC.encode(
            {"mode": mode, "source": source, "vars": tv, "host_functions": hf.signatures()}
        )
        raw, inv, fuel_used, ms, err = self._call("pi_eval", request, limits, hf)
        if err is not None:
            return RunResult(False, None, None, inv.logs, err, fuel_used, ms)
        try:
            resp = _DEC.decode(raw)
            if resp.get("ok"):
                typed = resp.get("value", {"type": "unit", "value": None})
                return RunResult(True, from_typed(typed), typed, inv.logs, None, fuel_used, ms)
            e = resp["error"]
            etype = str(e.get("type", ""))
            error = ScriptError(
                "limit" if etype in LIMIT_TYPES else str(e.get("kind", "runtime")),
                etype,
                str(e.get("message", "")),
                int(e.get("line") or 0),
                int(e.get("column") or 0),
            )
        except (msgspec.DecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
            error = ScriptError("runtime", "ErrorEngineFault", f"bad engine response: {exc}", 0, 0)
        if inv.host_limit is not None and error.kind == "limit":
            error = ScriptError(
                "limit", inv.host_limit.type, inv.host_limit.message, error.line, error.column
            )
        elif inv.out_over and error.kind == "limit" and not error.type:
            error.type = "ErrorTooMuchOutput"
        return RunResult(False, None, None, inv.logs, error, fuel_used, ms)

    def check(self, source: str) -> list[ScriptError]:
        """Parses `source` as a script; the syntax errors, [] when it is valid."""
        r = self.run(source, mode="parse")
        return [] if r.ok or r.error is None else [r.error]

    def analyze(self, source: str) -> dict[str, Any]:
        """The engine's `pi_analyze`: diagnostics and a symbol index (see engine/ABI.md)."""
        if "pi_analyze" not in self.exports:
            raise RuntimeError("this engine.wasm has no pi_analyze export")
        raw, _inv, _fuel, _ms, err = self._call(
            "pi_analyze", _ENC.encode({"source": source}), Limits(), self._default_host
        )
        if err is not None:
            raise RuntimeError(f"pi_analyze failed: {err.type}: {err.message}")
        result: dict[str, Any] = _DEC.decode(raw)
        return result

    # -----------------------------------------------------------------------------------------

    def _call(
        self, export: str, request: bytes, limits: Limits, host: HostFunctions
    ) -> tuple[bytes, _Invocation, int, float, ScriptError | None]:
        """One fresh instance: call `export` with `request`; the raw response or the error."""
        t0 = time.perf_counter()
        deadline = time.monotonic() + limits.timeout_s
        inv = _Invocation(limits, host, deadline)
        if limits.memory_bytes < self.initial_memory_bytes:
            err = _limit(
                "ErrorMemoryLimit",
                f"memory limit {limits.memory_bytes} bytes is below the engine's initial "
                f"memory of {self.initial_memory_bytes} bytes",
            )
            return b"", inv, 0, (time.perf_counter() - t0) * 1000, err
        store = wasmtime.Store(self._engine)
        store.set_limits(memory_size=limits.memory_bytes)
        store.set_fuel(limits.fuel)
        wasi = wasmtime.WasiConfig()
        stderr_path = self._stderr_path()
        try:
            wasi.stderr_file = stderr_path
        except wasmtime.WasmtimeError:  # the folder was removed under us: make a new one
            self._stderr_dir = None
            self._tls.stderr = None
            stderr_path = self._stderr_path()
            wasi.stderr_file = stderr_path
        store.set_wasi(wasi)
        wffi.wasmtime_store_epoch_deadline_callback(store.ptr(), _EPOCH_CB, None, _NO_FINALIZER)
        store.set_epoch_deadline(1)
        token = self._timer.add(deadline)
        previous = getattr(_tls, "inv", None)
        _tls.inv = inv
        previous_host = hostlib.set_current(hostlib.Invocation(deadline, inv.add_log))
        raw = b""
        error: ScriptError | None = None
        try:
            instance = self._pre.instantiate(store)
            ctx = store._context()
            memory = wasmtime.Memory._from_raw(self._export(ctx, instance, "memory").of.memory)
            inv.memory = memory
            inv.mref = ctypes.addressof(memory._memory)
            if self._has_initialize:
                self._invoke(ctx, self._export(ctx, instance, "_initialize"), ())
            n = len(request)
            ptr = self._invoke(ctx, self._export(ctx, instance, "pi_alloc"), (n,)).i32
            ptr &= 0xFFFFFFFF
            if ptr == 0 or ptr + n > memory.data_len(store):
                raise RuntimeError("pi_alloc returned a bad pointer")
            ctypes.memmove(ctypes.addressof(memory.data_ptr(store).contents) + ptr, request, n)
            packed = self._invoke(ctx, self._export(ctx, instance, export), (ptr, n)).i64
            packed &= 0xFFFFFFFFFFFFFFFF
            rptr, rlen = packed >> 32, packed & 0xFFFFFFFF
            if rptr + rlen > memory.data_len(store):
                raise RuntimeError("engine response out of bounds")
            raw = ctypes.string_at(ctypes.addressof(memory.data_ptr(store).contents) + rptr, rlen)
        except wasmtime.Trap as trap:
            with contextlib.suppress(OSError), open(stderr_path, "rb") as f:
                inv.stderr += f.read(8192)
            error = self._trap_error(trap, inv, store, limits)
        except wasmtime.WasmtimeError as exc:
            if inv.timed_out:
                error = _limit("ErrorTimeout", f"Script timed out after {limits.timeout_s:g} s")
            else:
                error = ScriptError("runtime", "ErrorEngineFault", str(exc), 0, 0)
        except Exception as exc:
            error = ScriptError("runtime", "ErrorEngineFault", f"{type(exc).__name__}: {exc}", 0, 0)
        finally:
            _tls.inv = previous
            hostlib.set_current(previous_host)
            self._timer.remove(token)
        try:
            left = inv.fuel_left if inv.fuel_left is not None else store.get_fuel()
            fuel_used = limits.fuel - left
        except wasmtime.WasmtimeError:
            fuel_used = 0
        inv.memory = None
        inv.mref = 0
        del store
        return raw, inv, fuel_used, (time.perf_counter() - t0) * 1000, error

    def _stderr_path(self) -> str:
        """This thread's file for the guest's stderr (truncated by each invocation), in a
        folder of this process (a forked child gets its own, and never removes its parent's)."""
        pid = os.getpid()
        cached: tuple[int, str] | None = getattr(self._tls, "stderr", None)
        if cached is not None and cached[0] == pid:
            return cached[1]
        with self._stderr_lock:
            if self._stderr_dir is None or self._stderr_dir[0] != pid:
                folder = tempfile.mkdtemp(prefix=f"picloud-sandbox-{pid}-")
                self._stderr_dir = (pid, folder)
                atexit.register(_remove_folder, pid, folder)
            folder = self._stderr_dir[1]
        path = os.path.join(folder, f"stderr-{threading.get_ident()}")
        self._tls.stderr = (pid, path)
        return path

    def _export(self, ctx: Any, instance: wasmtime.Instance, name: str) -> Any:
        item = wffi.wasmtime_extern_t()
        buf = self._names[name]
        if not wffi.wasmtime_instance_export_get(
            ctx, ctypes.byref(instance._instance), buf, len(buf) - 1, ctypes.byref(item)
        ):
            raise RuntimeError(f"engine.wasm has no export {name}")
        return item

    @staticmethod
    def _invoke(ctx: Any, item: Any, args: tuple[int, ...]) -> Any:
        """Calls an exported function with raw i32 arguments; the first raw result slot."""
        vals = (wffi.wasmtime_val_raw_t * max(1, len(args)))()
        for i, a in enumerate(args):
            vals[i].i32 = a
        trap = ctypes.POINTER(wffi.wasm_trap_t)()
        err = wffi.wasmtime_func_call_unchecked(
            ctx, ctypes.byref(item.of.func), vals, len(vals), ctypes.byref(trap)
        )
        _raise_on(err, trap)
        return vals[0]

    def _trap_error(
        self, trap: wasmtime.Trap, inv: _Invocation, store: wasmtime.Store, limits: Limits
    ) -> ScriptError:
        code = trap.trap_code
        stderr = inv.stderr.decode("utf-8", "replace")
        if code == wasmtime.TrapCode.OUT_OF_FUEL:
            return _limit(
                "ErrorTooManyOperations",
                f"Script ran out of fuel: it used more than {limits.fuel:,} units, counted about "
                "one per WebAssembly instruction the engine executes (a few billion per second of "
                "compute; raise PICLOUD_SCRIPT_FUEL or --fuel)",
            )
        if code == wasmtime.TrapCode.INTERRUPT or inv.timed_out:
            return _limit("ErrorTimeout", f"Script timed out after {limits.timeout_s:g} s")
        if code == wasmtime.TrapCode.STACK_OVERFLOW:
            return _limit("ErrorStackOverflow", "Stack overflow (wasm stack exhausted)")
        if "memory allocation of" in stderr or self._memory_exhausted(inv, store, limits):
            m = re.search(r"memory allocation of (\d+) bytes", stderr)
            detail = f" (an allocation of {m.group(1)} bytes failed)" if m else ""
            return _limit(
                "ErrorMemoryLimit",
                f"Script needed more than {limits.memory_bytes} bytes of memory{detail}",
            )
        lines = [ln for ln in stderr.splitlines() if ln.strip() and "RUST_BACKTRACE" not in ln]
        detail = " ".join(lines)[:500] if lines else trap.message
        return ScriptError("runtime", "ErrorEngineFault", f"engine trapped: {detail}", 0, 0)

    @staticmethod
    def _memory_exhausted(inv: _Invocation, store: wasmtime.Store, limits: Limits) -> bool:
        # Without a message, a memory within one growth step of the limit means a denied grow.
        try:
            return inv.memory is not None and (
                inv.memory.data_len(store) + (1 << 20) > limits.memory_bytes
            )
        except Exception:
            return False


_engine_lock = threading.Lock()
_engine: Engine | None = None


def get_engine() -> Engine:
    """The process's engine, created on first use (thread-safe)."""
    global _engine
    if _engine is None:
        with _engine_lock:
            if _engine is None:
                _engine = Engine()
    return _engine
