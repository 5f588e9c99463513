"""One worker process's config handling (proxy/worker.py): what it refuses, what it pins."""

from __future__ import annotations

from pathlib import Path

import pytest

from weaver.config.load import build_config
from weaver.config.schema import Config, HostPort
from weaver.proxy.worker import NothingToServe, check_servable, is_single_node, loader, pinned

ORIGIN = [{"name": "o", "url": "http://127.0.0.1:9"}]
ROUTE = [{"path": "/", "origin": "o"}]


def _config(**tables: object) -> Config:
    return build_config({"cache": {"dir": ""}, **tables}, "weaver.toml")


@pytest.mark.parametrize(
    ("tables", "missing"),
    [
        ({}, "no [[origin]] and no [[route]]"),
        ({"origin": ORIGIN}, "no [[route]]"),
    ],
)
def test_a_config_with_nothing_to_serve_is_refused_with_what_to_add(
    tables: dict[str, object], missing: str
) -> None:
    with pytest.raises(NothingToServe) as raised:
        check_servable(_config(**tables))
    assert str(raised.value).startswith(f"weaver.toml: {missing}: nothing to serve (add an ")


def test_an_origin_and_a_route_are_enough_to_serve() -> None:
    check_servable(_config(origin=ORIGIN, route=ROUTE))


def test_only_one_worker_on_the_in_process_bus_is_a_single_node() -> None:
    assert is_single_node(_config())
    redis = {"url": "redis://127.0.0.1:6379/0"}
    secret = {"secret": "s" * 32}
    assert not is_single_node(_config(bus=redis, session=secret))
    assert not is_single_node(_config(server={"workers": 2}, bus=redis, session=secret))


def test_reserved_ports_replace_only_the_ports_the_file_left_at_zero() -> None:
    config = _config(server={"listen": "127.0.0.1:0"}, session={"listen": "127.0.0.1:8081"})
    got = pinned(config, 4000, 4001)
    assert got.server.listen == HostPort("127.0.0.1", 4000)
    assert got.session.listen == HostPort("127.0.0.1", 8081)  # set in the file: kept
    assert pinned(config, None, None) == config


def test_a_single_node_s_loader_completes_the_config_with_its_own_session_secret(
    tmp_path: Path,
) -> None:
    path = tmp_path / "weaver.toml"
    path.write_text(
        f'[cache]\ndir = "{tmp_path / "cache"}"\n'
        '[[origin]]\nname = "o"\nurl = "http://127.0.0.1:9"\n'
        '[[route]]\npath = "/"\norigin = "o"\n'
    )
    load = loader(str(path))
    first = load()
    assert len(first.session.secret) == 64
    assert load().session.secret == first.session.secret  # read back, not regenerated
    path.write_text(f'[cache]\ndir = "{tmp_path / "cache"}"\n')
    with pytest.raises(NothingToServe):
        load()
