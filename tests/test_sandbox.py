"""The wasmtime sandbox with the real engine.wasm: limits, isolation, host functions, cache.

Memory bound stated and checked here: 1,000 invocations in a row (a mix of ordinary scripts
and limit-ending ones) grow the process's RSS by less than 16 MiB after a 100-invocation
warm-up (measured: see the report printed by the test).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from picloud.workers import host as hostlib
from picloud.workers.host import HostError, HostFunctions, HostLimitError
from picloud.workers.sandbox import Engine, Limits, RunResult, get_engine

RSS_BOUND = 16 << 20
MEM16 = Limits(memory_bytes=16 << 20, fuel=10**12, timeout_s=20)


@pytest.fixture(scope="module")
def engine() -> Engine:
    return get_engine()


def healthy(engine: Engine) -> None:
    r = engine.run("40 + 2")
    assert r.ok, r.error
    assert r.value == 42
    assert r.typed == {"type": "int", "value": 42}


def limit(r: RunResult, type_: str) -> None:
    assert not r.ok
    assert r.error is not None
    assert (r.error.kind, r.error.type) == ("limit", type_), r.error


# --- limits ------------------------------------------------------------------------------------


def test_infinite_loop_runs_out_of_fuel(engine: Engine) -> None:
    lim = Limits(fuel=20_000_000)
    t0 = time.monotonic()
    r = engine.run("let x = 0; loop { x += 1; }", limits=lim)
    limit(r, "ErrorTooManyOperations")
    assert lim.fuel <= r.fuel_used <= lim.fuel + 1000
    assert time.monotonic() - t0 < 5
    healthy(engine)


def test_infinite_loop_times_out(engine: Engine) -> None:
    lim = Limits(fuel=10**15, timeout_s=0.3)
    t0 = time.monotonic()
    r = engine.run("let x = 0; while true { x += 1; }", limits=lim)
    elapsed = time.monotonic() - t0
    limit(r, "ErrorTimeout")
    assert 0.3 <= elapsed < 0.3 + 0.5, elapsed
    healthy(engine)


def test_runaway_recursion(engine: Engine) -> None:
    r = engine.run("fn down(n) { down(n + 1) } down(0)")
    limit(r, "ErrorStackOverflow")
    healthy(engine)


def test_deep_native_recursion_is_contained(engine: Engine) -> None:
    # Nested data built by a loop, then printed: deep Rust recursion inside the engine must end
    # in an error (a limit, or the engine's own check), never take the process down.
    r = engine.run(
        "let a = []; for i in 0..200000 { a = [a]; } print(a); 1",
        limits=Limits(fuel=2_000_000_000, timeout_s=10),
    )
    if not r.ok:
        assert r.error is not None and r.error.kind in ("limit", "runtime"), r.error
    healthy(engine)


@pytest.mark.parametrize(
    "build",
    [
        "let a = []; for i in 0..100000 { a = [a]; }",
        "let a = #{}; for i in 0..100000 { a = #{inner: a, list: [a]}; }",
        "let a = []; for i in 0..100000 { let c = a; a = [|| c]; }",
    ],
    ids=["array", "map", "closure"],
)
def test_deeply_nested_value_is_dropped_cleanly(engine: Engine, build: str) -> None:
    # Nesting 100,000 deep used to exhaust the wasm stack when the value was dropped (at
    # reassignment and at the end of the script); the engine now drops it iteratively.
    lim = Limits(memory_bytes=256 << 20, fuel=10**10, timeout_s=20)
    r = engine.run(build + " let n = 0; a = (); n + 7", limits=lim)
    assert r.ok, r.error
    assert r.value == 7
    r = engine.run(build + " 8", limits=lim)
    assert r.ok, r.error
    assert r.value == 8
    healthy(engine)


def test_eval_of_a_computed_string_runs_in_the_callers_scope(engine: Engine) -> None:
    r = engine.run(
        'let total = 1; let items = [1]; let op = "+= " + "41"; eval("total " + op);'
        ' eval("items.push(" + total + ")"); [total, items]'
    )
    assert r.ok, r.error
    assert r.value == [42, [1, 42]]
    r = engine.run('let n = 1; eval("n = 2; " + "n.nope()"); n')
    assert not r.ok and r.error is not None
    assert (r.error.kind, r.error.type) == ("runtime", "ErrorFunctionNotFound")
    r = engine.run('let n = 1; try { eval("n = 2; " + "n.nope()") } catch { } n')
    assert r.ok and r.value == 2, r.error
    # The caller's script functions, also recursively through eval, up to the call depth limit.
    r = engine.run(
        "fn dbl(x) { x * 2 }"
        ' fn rec(n) { if n == 0 { 0 } else { eval("rec(" + (n - 1) + ")") + 1 } }'
        ' [eval("dbl" + "(21)"), rec(20)]'
    )
    assert r.ok and r.value == [42, 20], r.error
    r = engine.run('fn boom(n) { eval("boom(" + (n + 1) + ")") } boom(0)')
    assert not r.ok and r.error is not None
    assert (r.error.kind, r.error.type) == ("limit", "ErrorStackOverflow"), r.error
    healthy(engine)


@pytest.mark.parametrize(
    "script",
    [
        'let s = "memory bomb"; loop { s += s; }',
        "let a = [1, 2, 3, 4]; loop { a += a; }",
        "let b = blob(1024, 0); loop { b += b; }",
        'let m = #{}; let i = 0; loop { m["k" + i] = i; i += 1; }',
    ],
    ids=["string", "array", "blob", "many-small"],
)
def test_memory_growth(engine: Engine, script: str) -> None:
    lim = Limits(memory_bytes=16 << 20, fuel=10**12, timeout_s=20)
    r = engine.run(script, limits=lim)
    limit(r, "ErrorMemoryLimit")
    healthy(engine)


def test_memory_limit_below_the_engines_initial_memory(engine: Engine) -> None:
    r = engine.run("1", limits=Limits(memory_bytes=engine.initial_memory_bytes - 1))
    limit(r, "ErrorMemoryLimit")
    assert engine.run("1", limits=Limits(memory_bytes=engine.initial_memory_bytes + (1 << 20))).ok


def test_huge_output(engine: Engine) -> None:
    lim = Limits(output_bytes=4096)
    r = engine.run('loop { print("hello, world"); }', limits=lim)
    limit(r, "ErrorTooMuchOutput")
    assert sum(len(line.text) for line in r.logs) <= lim.output_bytes
    assert r.logs and all(line.text == "hello, world" for line in r.logs)
    healthy(engine)


def test_huge_single_string_output(engine: Engine) -> None:
    r = engine.run('let s = "x"; for i in 0..20 { s += s; } print(s);')
    limit(r, "ErrorTooMuchOutput")
    assert r.logs == []
    healthy(engine)


def test_timeout_of_one_thread_does_not_stop_another(engine: Engine) -> None:
    # A's deadline passes while B runs: the epoch tick reaches B's store too, whose callback
    # must see that B's own deadline is still ahead and let it go on.
    results: dict[str, RunResult] = {}

    def run(name: str, lim: Limits) -> None:
        results[name] = engine.run("let x = 0; loop { x += 1; }", limits=lim)

    a = threading.Thread(target=run, args=("a", Limits(fuel=10**15, timeout_s=0.2)))
    b = threading.Thread(target=run, args=("b", Limits(fuel=400_000_000, timeout_s=60)))
    ticks = engine.epoch_ticks
    b.start()
    a.start()
    a.join()
    b.join()
    limit(results["a"], "ErrorTimeout")
    limit(results["b"], "ErrorTooManyOperations")
    assert engine.epoch_ticks > ticks


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_timeouts_work_in_a_forked_child(engine: Engine) -> None:
    healthy(engine)  # the timer thread exists in the parent
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if the timeout fires
        ok = False
        try:
            # Fuel for about 5 s bounds the child even if the timeout never fires.
            r = engine.run("loop { }", limits=Limits(fuel=20 * 10**9, timeout_s=0.2))
            ok = r.error is not None and r.error.type == "ErrorTimeout"
        finally:
            os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent is unaffected by the child (its files, its exit).
    limit(engine.run('let s = "x"; loop { s += s; }', limits=MEM16), "ErrorMemoryLimit")


def test_forked_child_exiting_normally_leaves_parent_working(engine: Engine) -> None:
    healthy(engine)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            r = engine.run('let s = "x"; loop { s += s; }', limits=MEM16)
            code = 0 if r.error is not None and r.error.type == "ErrorMemoryLimit" else 1
        finally:
            # A normal exit runs atexit handlers, which must not remove the parent's files.
            import atexit

            atexit._run_exitfuncs()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    r = engine.run('let s = "x"; loop { s += s; }', limits=MEM16)
    limit(r, "ErrorMemoryLimit")
    assert "allocation of" in r.error.message  # type: ignore[union-attr]


def test_no_epoch_ticks_without_deadlines(engine: Engine) -> None:
    ticks = engine.epoch_ticks
    for _ in range(50):
        healthy(engine)
    time.sleep(0.2)
    assert engine.epoch_ticks == ticks


def test_concurrent_invocations(engine: Engine) -> None:
    out: list[Any] = []

    def worker(i: int) -> None:
        for j in range(25):
            r = engine.run(f"let n = {i * 100 + j}; print(n); n * 2")
            out.append((r.value, [line.text for line in r.logs], i * 100 + j))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 100
    for value, logs, n in out:
        assert value == n * 2
        assert logs == [str(n)]


# --- isolation and memory -----------------------------------------------------------------------


def test_nothing_leaks_between_invocations(engine: Engine) -> None:
    assert engine.run("let secret = 42; secret").value == 42
    r = engine.run("secret")
    assert not r.ok and r.error is not None
    assert r.error.type == "ErrorVariableNotFound"


def _rss() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    import resource

    return pages * resource.getpagesize()


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs /proc")
def test_thousand_invocations_do_not_grow_memory(
    engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    scripts = [
        ("let m = #{a: 1, b: [1, 2, 3]}; print(`m = ${m.a}`); m.b.len()", True),
        ('let s = ""; for i in 0..200 { s += i; } s.len()', True),
        ("fn f(n) { if n < 2 { n } else { f(n - 1) + f(n - 2) } } f(12)", True),
        ("loop { }", False),
    ]
    lim = Limits(fuel=5_000_000)

    def one(i: int) -> None:
        src, ok = scripts[i % len(scripts)]
        r = engine.run(src, limits=lim)
        assert r.ok == ok, r.error

    for i in range(100):
        one(i)
    before = _rss()
    t0 = time.perf_counter()
    for i in range(1000):
        one(i)
    elapsed = time.perf_counter() - t0
    after = _rss()
    with capsys.disabled():
        print(
            f"\n1000 invocations: {elapsed * 1000:.0f} ms, RSS {before / 2**20:.1f} MiB -> "
            f"{after / 2**20:.1f} MiB (growth {(after - before) / 2**20:+.2f} MiB, "
            f"bound {RSS_BOUND >> 20} MiB)"
        )
    assert after - before < RSS_BOUND


# --- results, vars, parse ------------------------------------------------------------------------


def test_value_types(engine: Engine) -> None:
    r = engine.run("#{a: 1, b: [1.5, true, \"x\", 'c', ()], c: blob(2, 7)}")
    assert r.ok, r.error
    assert r.value == {"a": 1, "b": [1.5, True, "x", "c", None], "c": b"\x07\x07"}
    assert r.typed["value"]["b"]["value"][3] == {"type": "char", "value": "c"}


def test_print_and_debug_are_captured(engine: Engine) -> None:
    r = engine.run('print("hello"); debug("dbg"); 1')
    assert r.ok, r.error
    assert [(line.stream, line.text) for line in r.logs] == [
        ("print", "hello"),
        ("debug", '"dbg"'),
    ]


def test_runtime_error_after_print(engine: Engine) -> None:
    r = engine.run('print("first");\nundefined_var + 1')
    assert not r.ok and r.error is not None
    assert (r.error.kind, r.error.type, r.error.line) == ("runtime", "ErrorVariableNotFound", 2)
    assert [line.text for line in r.logs] == ["first"]


def test_vars(engine: Engine) -> None:
    r = engine.run(
        '`${request.method} ${request.headers["x-a"]} ${event.data.n + 1}`',
        vars={
            "request": {"method": "POST", "headers": {"x-a": "b"}},
            "event": {"type": "http", "data": {"n": 41}},
        },
    )
    assert r.ok, r.error
    assert r.value == "POST b 42"


def test_modes_and_check(engine: Engine) -> None:
    assert engine.run("1 + 2", mode="expression").value == 3
    r = engine.run("let x = 1; x", mode="expression")
    assert not r.ok and r.error is not None and r.error.kind == "parse"
    assert engine.run("let x = 1;", mode="parse").ok
    assert engine.check("fn f(a) { a + 1 } f(2)") == []
    errors = engine.check("let x = 1;\nlet y = ;")
    assert len(errors) == 1
    assert errors[0].kind == "parse" and errors[0].line == 2 and errors[0].column > 0


def test_bad_mode_is_a_caller_error(engine: Engine) -> None:
    with pytest.raises(ValueError):
        engine.run("1", mode="bogus")


# --- host functions ------------------------------------------------------------------------------

SHA256_ABC = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
# RFC 4231, test case 2.
HMAC_JEFE = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


def test_default_host_functions_in_python() -> None:
    assert hostlib.sha256("abc") == SHA256_ABC
    assert hostlib.sha256(b"abc") == SHA256_ABC
    assert hostlib.hmac_sha256("Jefe", "what do ya want for nothing?") == HMAC_JEFE
    assert hostlib.verify_hmac_sha256("Jefe", "what do ya want for nothing?", HMAC_JEFE.upper())
    assert not hostlib.verify_hmac_sha256("Jefe", "what do ya want for nothing!", HMAC_JEFE)
    assert not hostlib.verify_hmac_sha256("Jefe", "x", "not hex")
    assert hostlib.base64_encode("hello") == "aGVsbG8="
    assert hostlib.base64_decode("aGVsbG8=") == b"hello"
    with pytest.raises(HostError):
        hostlib.base64_decode("not base64!")
    with pytest.raises(HostError):
        hostlib.sha256(42)
    assert re.fullmatch(
        r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", hostlib.uuid()
    )
    assert abs(hostlib.now() - time.time() * 1000) < 5000


def test_default_host_functions_from_a_script(engine: Engine) -> None:
    r = engine.run(
        f"""
        let b = blob(3, 0x61);
        [sha256("abc"), sha256(b), hmac_sha256("Jefe", "what do ya want for nothing?"),
         verify_hmac_sha256("Jefe", "what do ya want for nothing?", "{HMAC_JEFE}"),
         verify_hmac_sha256("Jefe", "tampered", "{HMAC_JEFE}"),
         base64_encode("hello"), base64_decode("aGVsbG8="), uuid().len(), now() > 0]
        """
    )
    assert r.ok, r.error
    assert r.value == [
        SHA256_ABC,
        hostlib.sha256(b"aaa"),
        HMAC_JEFE,
        True,
        False,
        "aGVsbG8=",
        b"hello",
        36,
        True,
    ]


def test_host_error_is_catchable(engine: Engine) -> None:
    r = engine.run('try { base64_decode("%%%") } catch (e) { "caught" }')
    assert r.ok, r.error
    assert r.value == "caught"
    r = engine.run('base64_decode("%%%")')
    assert not r.ok and r.error is not None
    assert (r.error.kind, r.error.type) == ("runtime", "ErrorRuntime")
    assert "base64" in r.error.message


def test_custom_host_functions(engine: Engine) -> None:
    calls: list[Any] = []

    def record(x: Any) -> Any:
        calls.append(x)
        return {"seen": x}

    def boom() -> None:
        raise ZeroDivisionError("oops")

    def quota() -> None:
        raise HostLimitError("kv quota exceeded", "ErrorKvQuota")

    hf = (
        hostlib.default_host_functions()
        .register("record", 1, record)
        .register("boom", 0, boom)
        .register("quota", 0, quota)
    )
    r = engine.run("record([1, 'c', #{k: 2.5}]).seen", host=hf)
    assert r.ok, r.error
    assert r.value == [1, "c", {"k": 2.5}]
    assert calls == [[1, "c", {"k": 2.5}]]

    r = engine.run("boom()", host=hf)
    assert not r.ok and r.error is not None and r.error.kind == "runtime"
    assert "oops" in r.error.message

    r = engine.run('try { quota() } catch { "caught" }; "after"', host=hf)
    limit(r, "ErrorKvQuota")

    # A script function of the same name and arity wins over the host function.
    r = engine.run("fn record(x) { x * 10 } record(2)", host=hf)
    assert r.value == 20
    # Without the set, the name is unknown.
    r = engine.run("record(1)", host=HostFunctions())
    assert not r.ok and r.error is not None and r.error.type == "ErrorFunctionNotFound"
    healthy(engine)


# --- compile cache -------------------------------------------------------------------------------


def test_compiled_module_is_cached_on_disk(tmp_path: Path) -> None:
    first = Engine(cache_dir=tmp_path)
    assert not first.cache_hit
    assert first.cache_path is not None and first.cache_path.is_file()
    second = Engine(cache_dir=tmp_path)
    assert second.cache_hit
    assert second.run("40 + 2").value == 42
    # A corrupt cache file is replaced, not fatal. (Replaced by a rename, as the sandbox
    # writes it: the loaded module maps the file, so truncating it in place would crash the
    # processes that use it.)
    bad = tmp_path / "garbage.tmp"
    bad.write_bytes(b"garbage")
    bad.replace(second.cache_path)  # type: ignore[arg-type]
    third = Engine(cache_dir=tmp_path)
    assert not third.cache_hit
    assert third.run("40 + 2").value == 42


def test_cache_keeps_only_recent_builds(tmp_path: Path) -> None:
    for i in range(6):
        old = tmp_path / f"engine-{i:032x}.cwasm"
        old.write_bytes(b"old build")
        os.utime(old, (1000 + i, 1000 + i))
    engine = Engine(cache_dir=tmp_path)
    left = sorted(p.name for p in tmp_path.glob("engine-*.cwasm"))
    assert engine.cache_path is not None and engine.cache_path.name in left
    assert len(left) == 4
    assert f"engine-{5:032x}.cwasm" in left and f"engine-{0:032x}.cwasm" not in left


# --- editor support ------------------------------------------------------------------------------


def test_analyze_reports_diagnostics(engine: Engine) -> None:
    good = engine.analyze("let x = 1;\nfn f(a) { a + 1 }\nf(x)")
    assert good["diagnostics"] == []
    assert isinstance(good["symbols"], list) and isinstance(good["references"], list)
    bad = engine.analyze("let x = 1;\nlet y = ;")
    (d,) = bad["diagnostics"]
    assert (d["line"], d["column"]) == (2, 9)
    assert d["type"] and d["message"]


def test_host_function_bad_return_value(engine: Engine) -> None:
    hf = HostFunctions().register("obj", 0, lambda: object()).register("huge", 0, lambda: 1 << 70)
    for call in ("obj()", "huge()"):
        r = engine.run(call, host=hf)
        assert not r.ok and r.error is not None
        assert (r.error.kind, r.error.type) == ("runtime", "ErrorRuntime"), r.error
    healthy(engine)


def test_process_exits_cleanly_after_traps() -> None:
    # Regression: capturing the guest's stderr with a Python callback (run by wasmtime on its
    # tokio threads) made about every other process abort at exit with a Rust panic.
    code = (
        "from picloud.workers.sandbox import get_engine, Limits\n"
        "e = get_engine()\n"
        "for s in ['let s = \"x\"; loop { s += s; }', 'fn f(n) { f(n + 1) } f(0)']:\n"
        "    assert e.run(s, limits=Limits(memory_bytes=16 << 20, fuel=10**12)).error\n"
    )
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    for _ in range(4):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
        )
        assert out.returncode == 0, out.stderr
        assert "panicked" not in out.stderr, out.stderr


def test_log_host_function(engine: Engine) -> None:
    r = engine.run('print(1); log("hello"); log(#{a: [1, 2.5, true], b: blob(2, 1)}); 3')
    assert r.ok, r.error
    assert [(line.stream, line.text) for line in r.logs] == [
        ("print", "1"),
        ("log", "hello"),
        ("log", '{"a":[1,2.5,true],"b":"AQE="}'),
    ]
    # Counted against the output limit, and not catchable.
    script = 'try { loop { log("12345678") } } catch { print("caught") }'
    r = engine.run(script, limits=Limits(output_bytes=100))
    limit(r, "ErrorTooMuchOutput")
    assert len(r.logs) == 12 and all(line.stream == "log" for line in r.logs)
    assert hostlib.current() is None  # nothing left behind on this thread


def test_host_function_sees_its_invocation(engine: Engine) -> None:
    seen: list[float] = []

    def remaining() -> float:
        inv = hostlib.current()
        assert inv is not None
        seen.append(inv.remaining_s())
        return inv.remaining_s()

    hf = HostFunctions().register("remaining", 0, remaining)
    r = engine.run("remaining()", host=hf, limits=Limits(timeout_s=2.0))
    assert r.ok, r.error
    assert 1.0 < r.value <= 2.0
    assert hostlib.current() is None
