"""Event types without a database: encoding, decoding, upcasting old schema versions."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec
import pytest

from picloud.events import types as t


def test_encode_decode_round_trip() -> None:
    e = t.ReplayRequested(invocation_ids=["a", "b"], version=3)
    assert t.encode(e) == {"invocation_ids": ["a", "b"], "version": 3}
    assert t.decode("replay.requested", t.encode(e)) == e


def test_decode_rejects_unknown_types_and_bad_data() -> None:
    with pytest.raises(KeyError):
        t.decode("nope.happened", {})
    with pytest.raises(msgspec.ValidationError):
        t.decode("script.deleted", {"name": 3})
    with pytest.raises(msgspec.ValidationError):
        t.decode(
            "invocation.requested",
            {
                "invocation_id": "i",
                "script": "s",
                "version": 1,
                "trigger": "carrier-pigeon",
                "request": None,
                "event": {},
            },
        )


def test_old_versions_are_upcast(monkeypatch: pytest.MonkeyPatch) -> None:
    class Renamed(t.Event, frozen=True, kw_only=True):
        TYPE: ClassVar[str] = "test.renamed"
        VERSION: ClassVar[int] = 3
        title: str
        tags: list[str]

    monkeypatch.setitem(t.EVENT_TYPES, Renamed.TYPE, Renamed)

    @t.upcaster("test.renamed", 1)
    def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        return {"title": data["name"]}

    @t.upcaster("test.renamed", 2)
    def v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "tags": []}

    assert t.decode("test.renamed", {"name": "x"}, 1) == Renamed(title="x", tags=[])
    assert t.decode("test.renamed", {"title": "y"}, 2) == Renamed(title="y", tags=[])
    assert t.decode("test.renamed", {"title": "z", "tags": ["a"]}, 3) == Renamed(
        title="z", tags=["a"]
    )


def test_missing_upcaster_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class Bumped(t.Event, frozen=True, kw_only=True):
        TYPE: ClassVar[str] = "test.bumped"
        VERSION: ClassVar[int] = 2
        name: str

    monkeypatch.setitem(t.EVENT_TYPES, Bumped.TYPE, Bumped)
    with pytest.raises(ValueError, match="no upcaster"):
        t.decode("test.bumped", {"name": "x"}, 1)


@pytest.mark.parametrize(
    ("event", "stream"),
    [
        (t.ScriptDeleted(name="a"), "script-a"),
        (t.ScheduleDeleted(name="b"), "schedule-b"),
        (t.TokenRevoked(token_id="c"), "token-c"),
        (
            t.InvocationFailed(
                invocation_id="d",
                script="s",
                version=1,
                error={},
                logs=[],
                duration_ms=0,
                fuel_used=0,
                node="n",
            ),
            "invocation-d",
        ),
    ],
)
def test_stream_names(event: t.Event, stream: str) -> None:
    assert t.stream_for(event) == stream
