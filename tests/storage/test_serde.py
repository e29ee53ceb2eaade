"""The value codec: what it writes reads back as the annotated type."""

from __future__ import annotations

import math

import pytest

from kitaru import SerializationError
from kitaru.storage.serde import codec_for


@pytest.mark.parametrize("value", [math.inf, -math.inf, 1.5])
def test_infinities_round_trip_as_floats(value: float) -> None:
    codec = codec_for(float)
    assert codec.load(codec.dump(value, what="v"), what="v") == value


def test_nan_round_trips_inside_containers() -> None:
    codec = codec_for(list[float])
    back = codec.load(codec.dump([math.nan, 2.0], what="v"), what="v")
    assert math.isnan(back[0]) and back[1] == 2.0


@pytest.mark.parametrize(
    ("annotation", "value"),
    [(str, "héllo"), (int, 10**30), (bool, True), (bytes, b"\x00\xff"), (type(None), None)],
)
def test_exact_types_write_what_the_checked_path_writes(annotation: type, value: object) -> None:
    codec = codec_for(annotation)
    checked = codec._adapter.dump_json(value, warnings="error")
    assert codec.dump(value, what="v") == checked
    assert codec.load(checked, what="v") == value


def test_a_value_of_another_type_still_fails_clearly() -> None:
    with pytest.raises(SerializationError, match="cannot be stored as int"):
        codec_for(int).dump("not a number", what="checkpoint 'c'")
