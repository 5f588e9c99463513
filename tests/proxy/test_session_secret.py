"""The session secret a single node keeps for itself (proxy/session_secret.py), on disk."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from weaver.config.load import build_config
from weaver.config.schema import Config
from weaver.proxy.session_secret import FILE_NAME, secret_path, with_session_secret


def _config(cache_dir: Path, secret: str = "") -> Config:
    session = {"secret": secret} if secret else {}
    return build_config({"session": session, "cache": {"dir": str(cache_dir)}}, "<test>")


def test_a_configured_secret_is_kept_and_nothing_is_written(tmp_path: Path) -> None:
    config = _config(tmp_path / "cache", secret="configured-secret")
    assert with_session_secret(config) is config
    assert not (tmp_path / "cache").exists()


def test_a_node_without_one_generates_it_once_private_and_reads_it_back(tmp_path: Path) -> None:
    config = _config(tmp_path / "cache")  # the cache directory does not exist yet
    first = with_session_secret(config).session.secret
    path = secret_path(config)
    assert path == tmp_path / "cache" / FILE_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) == 64 and int(first, 16) >= 0  # 32 random bytes, hex
    assert path.read_text() == first + "\n"
    assert with_session_secret(config).session.secret == first  # a restart: the same one
    assert with_session_secret(_config(tmp_path / "other")).session.secret != first


def test_everything_else_in_the_config_is_unchanged(tmp_path: Path) -> None:
    config = _config(tmp_path)
    got = with_session_secret(config)
    assert got.cache == config.cache and got.server == config.server
    assert got.session.listen == config.session.listen


@pytest.mark.parametrize("content", ["", "short\n", "x" * 31])
def test_a_file_with_no_usable_secret_is_refused_with_the_fix(tmp_path: Path, content: str) -> None:
    (tmp_path / FILE_NAME).write_text(content)
    with pytest.raises(
        OSError, match="holds no usable secret \\(delete it to generate a new one\\)"
    ):
        with_session_secret(_config(tmp_path))
