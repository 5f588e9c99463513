"""A real store in a temporary directory, for the cache's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from weaver.cache.store import Store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(str(tmp_path / "cache"), max_size_bytes=256 * 1024**2) as opened:
        yield opened
