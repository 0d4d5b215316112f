"""Default limits: the wall-clock timeout, not fuel, ends a CPU-bound script."""

from __future__ import annotations

import pytest

from picloud.workers.sandbox import Limits, get_engine
from picloud.workers.tasks import default_limits
from tests.runtime_fixtures import engine_ready  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("engine_ready")


def test_default_fuel_runs_a_million_iterations(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PICLOUD_SCRIPT_FUEL", raising=False)
    r = get_engine().run("let s = 0; for i in 0..1000000 { s += i; } s",
                         limits=default_limits())
    assert r.ok, r.error
    assert r.value == 499999500000


@pytest.mark.timeout(60)
def test_default_limits_end_a_busy_loop_by_the_timeout_not_fuel() -> None:
    r = get_engine().run("let x = 0; loop { x += 1; }", limits=Limits())
    assert not r.ok and r.error is not None
    assert r.error.type == "ErrorTimeout", r.error.message


def test_out_of_fuel_message_says_what_is_counted() -> None:
    r = get_engine().run("loop { }", limits=Limits(fuel=1_000_000))
    assert r.error is not None and r.error.type == "ErrorTooManyOperations"
    assert "1,000,000" in r.error.message
    assert "WebAssembly instruction" in r.error.message and "PICLOUD_SCRIPT_FUEL" in r.error.message
