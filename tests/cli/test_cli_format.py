"""The CLI's pure helpers, in-process: durations, short ids, tables, VALUE parsing."""

from __future__ import annotations

from typing import Any

import pytest

from kitaru._cli._commands import UsageError, parse_checkpoint, parse_overrides, parse_value
from kitaru._cli._render import duration, short_ids, table


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, ""),
        (0, "0ms"),
        (0.00035, "0.35ms"),
        (0.35, "350ms"),
        (0.9996, "1.0s"),
        (1.24, "1.2s"),
        (59.96, "1m00s"),
        (184, "3m04s"),
        (7500, "2h05m"),
        (3 * 86400 + 4 * 3600 + 59, "3d04h"),
    ],
)
def test_durations_are_humanised(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_short_ids_are_unique_prefixes_of_generated_ids() -> None:
    a, b, c = "ab" * 16, "ab" * 6 + "cd" * 10, "0123456789abcdef" * 2
    assert short_ids([a, c, "my-run"]) == {a: a[:12], c: c[:12], "my-run": "my-run"}
    shown = short_ids([a, b])
    assert shown[a] != shown[b] and len(shown[a]) == 16
    assert short_ids(["f" * 12]) == {"f" * 12: "f" * 12}


def test_tables_are_sized_to_content() -> None:
    lines = table(("ID", "N", "NOTE"), [("a", "1", "x"), ("bbbb", "22", "")], right=(1,))
    assert lines == ["ID     N  NOTE", "a      1  x", "bbbb  22"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("42", 42),
        ("null", None),
        ('"true"', "true"),
        ('{"a": [1, 2]}', {"a": [1, 2]}),
        ("yes", "yes"),
        ("two words", "two words"),
        ("NaN", "NaN"),  # not JSON: taken as a word
        ("", ""),
    ],
)
def test_values_are_json_or_bare_words(text: str, value: Any) -> None:
    assert parse_value(text) == value


@pytest.mark.parametrize("text", ["{oops", "[1, 2", '"open', ' {"a": }'])
def test_broken_json_is_an_error(text: str) -> None:
    with pytest.raises(UsageError, match="not valid JSON"):
        parse_value(text)


def test_replay_arguments() -> None:
    assert parse_checkpoint(None) is None
    assert parse_checkpoint("3") == 3
    assert parse_checkpoint("research#2") == "research#2"
    assert parse_overrides(["a=1", 'b#2={"x": "y"}', "c=word"]) == {
        "a": 1,
        "b#2": {"x": "y"},
        "c": "word",
    }
    for bad in (["a"], ["=1"], ["a=1", "a=2"]):
        with pytest.raises(UsageError):
            parse_overrides(bad)
