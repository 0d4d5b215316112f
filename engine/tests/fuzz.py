"""Mutation fuzzing of the native runner: the engine must answer every input.

Mutates the conformance scripts (deletions, insertions of tokens, duplicated
spans), runs them through `rhai-native --batch`, and fails if the runner dies
before answering every request (a panic, a stack overflow). Scripts that loop
forever hit the timeout and are reported as such, not as crashes (in the
sandbox, fuel ends them).

    python3 engine/tests/fuzz.py [--seed N] [--count N] [--bin PATH]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
CORPUS = Path("/work/shared/conformance")
TOKENS = [
    *"(){}[];,.+-*/%<>=!&|^?:#$@`'\"\\",
    "..",
    "..=",
    "let ",
    "fn ",
    "if ",
    "else ",
    "while ",
    "for ",
    " in ",
    "switch ",
    "=>",
    "this",
    "return",
    "throw",
    "try",
    "catch",
    "|x|",
    "||",
    "0",
    "-1",
    "9223372036854775807",
    "1.5",
    '"s"',
    "'c'",
    "x",
    "()",
    "#{",
    "?.",
    "?[",
    "??",
    "::",
    "global::",
    ".call(",
    "!(",
]


def mutate(rng: random.Random, src: str) -> str:
    """One to four random edits of a script."""
    s = list(src)
    for _ in range(rng.randint(1, 4)):
        op = rng.random()
        pos = rng.randint(0, len(s))
        if op < 0.4 and s:
            del s[min(pos, len(s) - 1)]
        elif op < 0.8:
            s.insert(pos, rng.choice(TOKENS))
        else:
            a = rng.randint(0, len(s))
            b = rng.randint(a, len(s))
            s[a:b] = s[a:b] * 2
    return "".join(s)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=4000)
    ap.add_argument("--bin", type=Path, default=HERE.parent / "target" / "release" / "rhai-native")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    srcs = [json.loads(line)["script"] for line in (CORPUS / "rhai-tests.jsonl").open()]
    reqs: list[dict[str, Any]] = [
        {
            "id": n,
            "source": mutate(rng, rng.choice(srcs)),
            "mode": rng.choice(["script", "script", "expression", "parse"]),
        }
        for n in range(args.count)
    ]
    text = "".join(json.dumps(r) + "\n" for r in reqs)
    try:
        proc = subprocess.run(
            [str(args.bin), "--batch"],
            input=text,
            capture_output=True,
            text=True,
            timeout=args.timeout,
        )
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        n = len(out.split("\n")) - 1
        print(f"timeout after {n} answers; request {n} probably loops: {reqs[n]['source']!r}")
        return 0
    answered = len(proc.stdout.split("\n")) - 1
    print(f"answered {answered} of {len(reqs)} (exit status {proc.returncode})")
    if answered < len(reqs) or proc.returncode != 0:
        bad = reqs[min(answered, len(reqs) - 1)]
        print(f"CRASH on {bad['mode']} {bad['source']!r}\n{proc.stderr[-2000:]}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
