"""Durations and sizes as operators write them in weaver.toml (config/units.py, pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from weaver.config.units import parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("300ms", 0.3),
        ("60s", 60.0),
        ("1.5s", 1.5),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        (" 2 s ", 2.0),
        ("0s", 0.0),
    ],
)
def test_a_duration_reads_as_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5 min", "-1s", "1e3s", "s", "1.s", "1S", "5m30s"])
def test_anything_else_is_refused_with_the_accepted_forms(text: str) -> None:
    with pytest.raises(ValueError, match=r'is not a duration \(try "300ms", "60s", "5m" or "1h"\)'):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4096", 4096),
        ("10B", 10),
        ("1KB", 1000),
        ("1KiB", 1024),
        ("512MiB", 512 * 1024**2),
        ("1GB", 1000**3),
        ("1.5GiB", 3 * 1024**3 // 2),
        ("2TiB", 2 * 1024**4),
        ("3TB", 3 * 1000**4),
        (" 100 MB ", 100 * 1000**2),
    ],
)
def test_a_size_reads_as_bytes_in_decimal_or_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "1 kb", "1K", "-1MB", "MB", "1MiBs", "ten"])
def test_a_size_in_no_known_unit_is_refused_with_examples(text: str) -> None:
    with pytest.raises(ValueError, match=r'is not a size \(try "512MiB", "1GiB" or "100MB"\)'):
        parse_size(text)


@given(st.integers(min_value=0, max_value=10**9))
def test_whole_numbers_of_each_unit_scale_exactly(n: int) -> None:
    assert parse_duration(f"{n}ms") == pytest.approx(n / 1000)
    assert parse_duration(f"{n}m") == n * 60
    assert parse_size(f"{n}KiB") == n * 1024
    assert parse_size(str(n)) == n


@given(st.text(max_size=20))
def test_any_text_is_a_value_or_a_value_error(text: str) -> None:
    for parse in (parse_duration, parse_size):
        try:
            assert parse(text) >= 0
        except ValueError as exc:
            assert f'"{text}"' in str(exc)  # the message quotes what was written
