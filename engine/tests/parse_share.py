"""How much of one invocation of a realistic webhook script is parsing (engine/README.md,
"Parse reuse"). Runs through the real sandbox: ``picloud.workers.sandbox.get_engine().run``.

    python3 engine/tests/parse_share.py [N]

Three measurements (the same `request` variable each time), each the median of N
invocations, interleaved (a fresh instance each time):
  baseline  mode "parse" of an empty script: instantiate + request/response + collect;
  parse     mode "parse" of the webhook: baseline + lexing/parsing/resolving;
  script    mode "script" of the webhook: baseline + parsing + running.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

from picloud.workers.sandbox import get_engine

SCRIPT = (Path(__file__).parent / "data" / "webhook.rhai").read_text()
ORDER = {
    "customer": {"email": "ada@example.org"},
    "currency": "eur",
    "coupon": "WELCOME10",
    "tags": ["Web", "", "Promo"],
    "items": [
        {"sku": f" sku {i} ", "qty": 1 + i % 3, "price_cents": 250 + 37 * i} for i in range(12)
    ],
}
REQUEST = {
    "method": "POST",
    "path": "/hooks/order",
    "headers": {"content-type": "application/json", "X-Request-Id": "r-42"},
    "body": json.dumps(ORDER),
}


def measure(n: int) -> dict[str, tuple[float, int]]:
    """(median wall ms, median fuel) per case, the cases interleaved round by round."""
    engine = get_engine()
    vars = {"request": REQUEST}
    cases = {"baseline": ("", "parse"), "parse": (SCRIPT, "parse"), "script": (SCRIPT, "script")}
    times: dict[str, list[float]] = {k: [] for k in cases}
    fuel: dict[str, list[int]] = {k: [] for k in cases}
    for _ in range(n):
        for name, (source, mode) in cases.items():
            t0 = time.perf_counter()
            r = engine.run(source, mode=mode, vars=vars)
            times[name].append((time.perf_counter() - t0) * 1000)
            fuel[name].append(r.fuel_used)
            if not r.ok:
                raise SystemExit(f"{name} failed: {r.error}")
    return {k: (statistics.median(times[k]), int(statistics.median(fuel[k]))) for k in cases}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    engine = get_engine()
    check = engine.run(SCRIPT, vars={"request": REQUEST})
    if not check.ok or check.value["status"] != 200:
        raise SystemExit(f"webhook did not succeed: {check.error or check.value}")
    measure(20)  # warm-up
    m = measure(n)
    (base, bf), (parse, pf), (script, sf) = m["baseline"], m["parse"], m["script"]
    print(f"webhook.rhai: {SCRIPT.count(chr(10))} lines, {len(SCRIPT)} bytes; median of {n}")
    for label, (ms, fu) in (
        ("baseline: instantiate, request in, empty parse, response out", (base, bf)),
        ("parse mode: baseline + parse", (parse, pf)),
        ("script mode: baseline + parse + run", (script, sf)),
    ):
        print(f"{label:62} {ms:7.3f} ms, fuel {fu}")
    for label, ms, fu in (
        ("parse alone", parse - base, pf - bf),
        ("run alone", script - parse, sf - pf),
        ("baseline", base, bf),
    ):
        wall, fuel = 100 * ms / script, 100 * fu / sf
        print(f"{label:12} {ms:7.3f} ms = {wall:5.1f}% of wall, fuel {fuel:5.1f}%")


if __name__ == "__main__":
    main()
