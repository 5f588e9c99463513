"""Parsing of the human units used in config files: durations and sizes (pure)."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*$")
_DURATION_UNITS_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "KiB": 1024,
    "MiB": 1024**2,
    "GiB": 1024**3,
    "TiB": 1024**4,
}


def parse_duration(text: str) -> float:
    """Parse ``"300ms"``, ``"60s"``, ``"5m"``, ``"1h"``, ``"1d"`` into seconds.

    Raises:
        ValueError: with a message that suggests the accepted form.
    """
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f'"{text}" is not a duration (try "300ms", "60s", "5m" or "1h")')
    return float(match.group(1)) * _DURATION_UNITS_S[match.group(2)]


def parse_size(text: str) -> int:
    """Parse ``"512MiB"``, ``"1GB"``, ``"4096"`` into bytes.

    Raises:
        ValueError: with a message that suggests the accepted form.
    """
    match = _SIZE.match(text)
    if match is None:
        raise ValueError(f'"{text}" is not a size (try "512MiB", "1GiB" or "100MB")')
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2)])
