"""Pure parts of the runtime: response shaping, request forms, cron, job-done payloads."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest

from picloud.ingress.auth import Principal, bearer
from picloud.ingress.services import valid_name
from picloud.ingress.waiter import parse_job_done
from picloud.workers import cron
from picloud.workers.responses import (
    request_to_event,
    request_to_script,
    response_body,
    shape_response,
)


def test_string_is_text() -> None:
    r = shape_response("hi")
    assert r["status"] == 200 and r["headers"]["content-type"].startswith("text/plain")
    assert response_body(r) == b"hi"


def test_unit_is_204() -> None:
    assert shape_response(None)["status"] == 204


def test_response_map() -> None:
    r = shape_response({"status": 201, "headers": {"X-A": "b"}, "body": {"ok": True}})
    assert r["status"] == 201 and r["headers"]["x-a"] == "b"
    assert r["headers"]["content-type"] == "application/json"
    assert response_body(r) == b'{"ok":true}'


def test_other_map_is_json() -> None:
    r = shape_response({"status": "x", "body": 1})
    assert r["status"] == 200 and response_body(r) == b'{"status":"x","body":1}'
    assert response_body(shape_response([1, 2])) == b"[1,2]"


def test_request_roundtrip_text_and_binary() -> None:
    stored = request_to_event("POST", "/a", {"q": "1"}, {"x": "y"}, b'{"k": 2}')
    seen = request_to_script(stored)
    assert seen is not None and seen["json"] == {"k": 2} and seen["body"] == '{"k": 2}'
    stored = request_to_event("POST", "", {}, {}, b"\xff\x00")
    assert stored["body_b64"] == base64.b64encode(b"\xff\x00").decode()
    seen = request_to_script(stored)
    assert seen is not None and seen["body"] == b"\xff\x00" and seen["json"] is None


def test_cron_six_fields_seconds_first() -> None:
    t = datetime(2026, 1, 1, 0, 0, 0, 500000, tzinfo=UTC)
    assert cron.next_fire("*/2 * * * * *", "UTC", t) == datetime(2026, 1, 1, 0, 0, 2, tzinfo=UTC)
    assert cron.next_fire("0 9 * * *", "UTC", t) == datetime(2026, 1, 1, 9, tzinfo=UTC)
    for bad in ("* * *", "61 * * * *", "* * * * * * *"):
        with pytest.raises(cron.CronError):
            cron.validate(bad)
    with pytest.raises(cron.CronError):
        cron.validate("* * * * *", "Mars/Olympus")


def test_names_and_tokens() -> None:
    assert valid_name("a") and valid_name("hello-2") and valid_name("9" * 63)
    assert not valid_name("-a") and not valid_name("A") and not valid_name("a" * 64)
    assert not valid_name("a_b") and not valid_name("")
    assert bearer("Bearer abc") == "abc" and bearer("Basic abc") is None and bearer(None) is None
    assert Principal("x", frozenset({"write"})).allows("read")
    assert not Principal("x", frozenset({"read"})).allows("write")


def test_job_done_payloads() -> None:
    assert parse_job_done("42") == (42, None)
    assert parse_job_done('{"job_id": 7, "status": "doing"}') == (7, "doing")
    assert parse_job_done("nonsense") is None
