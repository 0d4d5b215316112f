"""`picloud run`: run a Rhai script locally in the same sandbox the workers use.

``picloud run FILE.rhai``
    ``print`` lines go to stdout, ``debug`` (and ``log``) lines to stderr; on error the kind,
    Rhai's variant name, the message, line and column go to stderr and the exit status is 1.

``picloud run --batch``
    JSON lines on stdin, ``{"id", "source", "mode"}`` with ``mode`` one of ``script``,
    ``expression``, ``parse``, ``parse_expression`` (Rhai's ``eval``, ``eval_expression``,
    ``compile`` and ``compile_expression`` are accepted as synonyms); one JSON line out per
    line in, in order: ``{"id", "ok", "value": TYPED, "stdout", "error": {"kind", "type",
    "message", "line", "column"}}``. Each input runs in a fresh instance.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

import msgspec
import wasmtime

from picloud.workers.sandbox import Engine, Limits, RunResult, ScriptError, get_engine

MODE_ALIASES = {
    "script": "script",
    "expression": "expression",
    "parse": "parse",
    "parse_expression": "parse_expression",
    "eval": "script",
    "run": "script",
    "eval_expression": "expression",
    "compile": "parse",
    "compile_expression": "parse_expression",
}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "run",
        help="run a Rhai script locally in the sandbox",
        description="Run a Rhai script in the wasm sandbox: print to stdout, debug to stderr.",
    )
    p.add_argument("file", nargs="?", help="the script (.rhai); '-' reads standard input")
    p.add_argument(
        "--batch",
        action="store_true",
        help="read JSON lines {id, source, mode} on stdin, write one JSON result line each",
    )
    p.add_argument(
        "-e", "--expression", action="store_true", help="the file is a single expression"
    )
    p.add_argument("--value", action="store_true", help="print the result (typed JSON) to stdout")
    p.add_argument(
        "--var",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="a top-level variable given as JSON (so no blob or char values), "
        'e.g. --var \'request={"method": "POST"}\'; repeatable',
    )
    d = Limits()
    p.add_argument("--fuel", type=int, default=d.fuel, help=f"operations (default {d.fuel})")
    p.add_argument(
        "--timeout", type=float, default=d.timeout_s, help=f"seconds (default {d.timeout_s:g})"
    )
    p.add_argument(
        "--memory", type=int, default=d.memory_bytes, help=f"bytes (default {d.memory_bytes})"
    )
    p.add_argument(
        "--output-bytes",
        type=int,
        default=d.output_bytes,
        help=f"print/debug bytes (default {d.output_bytes})",
    )
    p.set_defaults(handler=_main)


def _limits(args: argparse.Namespace) -> Limits:
    return Limits(
        fuel=args.fuel,
        timeout_s=args.timeout,
        memory_bytes=args.memory,
        output_bytes=args.output_bytes,
    )


def _parse_vars(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.isidentifier():
            raise ValueError(f"--var wants NAME=JSON, got {item!r}")
        try:
            out[name] = msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise ValueError(f"--var {name}: not JSON ({exc})") from None
    return out


def format_error(e: ScriptError) -> str:
    where = f" at line {e.line}, column {e.column}" if e.line else ""
    return f"{e.kind} error {e.type}{where}: {e.message}"


def _main(args: argparse.Namespace) -> int:
    limits = _limits(args)
    try:
        engine = get_engine()
    except (OSError, RuntimeError, wasmtime.WasmtimeError) as exc:
        print(f"picloud run: cannot load the engine: {exc}", file=sys.stderr)
        return 2
    if args.batch:
        if args.file:
            print("picloud run: --batch reads standard input, give no FILE", file=sys.stderr)
            return 2
        return run_batch(sys.stdin, sys.stdout, engine, limits)
    if not args.file:
        print("picloud run: give a FILE.rhai (or --batch)", file=sys.stderr)
        return 2
    try:
        if args.file == "-":
            source = sys.stdin.read()
        else:
            with open(args.file, encoding="utf-8") as f:
                source = f.read()
    except OSError as exc:
        print(f"picloud run: {exc}", file=sys.stderr)
        return 2
    try:
        variables = _parse_vars(args.var)
    except ValueError as exc:
        print(f"picloud run: {exc}", file=sys.stderr)
        return 2
    mode = "expression" if args.expression else "script"
    result = engine.run(source, mode=mode, limits=limits, vars=variables)
    for line in result.logs:
        stream = sys.stdout if line.stream == "print" else sys.stderr
        stream.write(line.text + "\n")
        stream.flush()
    if result.error is not None:
        print(format_error(result.error), file=sys.stderr)
        return 1
    if args.value:
        sys.stdout.write(msgspec.json.encode(result.typed).decode() + "\n")
    return 0


def batch_line(result: RunResult, id_: Any) -> dict[str, Any]:
    e = result.error
    return {
        "id": id_,
        "ok": result.ok,
        "value": result.typed if result.ok else None,
        "stdout": "".join(ln.text + "\n" for ln in result.logs if ln.stream == "print"),
        "error": None
        if e is None
        else {
            "kind": e.kind,
            "type": e.type,
            "message": e.message,
            "line": e.line,
            "column": e.column,
        },
    }


def _bad_input(id_: Any, message: str) -> dict[str, Any]:
    return {
        "id": id_,
        "ok": False,
        "value": None,
        "stdout": "",
        "error": {
            "kind": "runtime",
            "type": "ErrorBadInput",
            "message": message,
            "line": 0,
            "column": 0,
        },
    }


def run_batch(inp: TextIO, out: TextIO, engine: Engine, limits: Limits) -> int:
    """The `--batch` loop; returns 0 (a failing script is a result, not a batch failure)."""
    enc = msgspec.json.Encoder()
    for raw in inp:
        if not raw.strip():
            continue
        id_: Any = None
        try:
            req = msgspec.json.decode(raw)
            if not isinstance(req, dict):
                raise ValueError("each line must be a JSON object")
            id_ = req.get("id")
            source = req.get("source")
            mode = MODE_ALIASES.get(req.get("mode") or "script")
            if not isinstance(source, str):
                raise ValueError("'source' must be a string")
            if mode is None:
                raise ValueError(f"unknown mode {req.get('mode')!r}")
        except (msgspec.DecodeError, ValueError) as exc:
            line = _bad_input(id_, str(exc))
        else:
            line = batch_line(engine.run(source, mode=mode, limits=limits), id_)
        out.write(enc.encode(line).decode() + "\n")
        out.flush()
    return 0
