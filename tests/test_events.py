"""Engine events are frozen, slotted dataclasses of plain values (docs/STYLE.md, rule 2)."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from engine import events

EVENT_TYPES = typing.get_args(events.Event)
PLAIN = (int, float, str, bool, tuple, type(None))


def test_every_event_is_frozen_and_slotted() -> None:
    assert len(EVENT_TYPES) == 13
    for cls in EVENT_TYPES:
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, cls
        assert "__slots__" in cls.__dict__, cls
        assert dataclasses.fields(cls)[0].name == "run_id", cls


def test_events_cannot_be_changed() -> None:
    e = events.TokenEvent(1, 0, "hi", 42)
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.text = "x"  # type: ignore[misc]


def test_field_types_are_plain_values() -> None:
    for cls in EVENT_TYPES:
        hints = typing.get_type_hints(cls)
        for name, hint in hints.items():
            origin = typing.get_origin(hint) or hint
            if origin is typing.Literal:
                continue
            assert origin in PLAIN, f"{cls.__name__}.{name}: {hint}"


def test_terminal_events() -> None:
    assert events.is_terminal(events.Finished(1, "done"))
    assert events.is_terminal(events.Stopped(1, "stopped by the user"))
    assert events.is_terminal(events.Failed(1, "no model"))
    assert not events.is_terminal(events.ErrorEvent(1, "note"))
