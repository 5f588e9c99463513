"""The table reader: typed values out, every problem recorded with its key path."""

from __future__ import annotations

from collections.abc import Mapping

from weaver.config.errors import ConfigProblem
from weaver.config.reader import Reader
from weaver.config.units import parse_duration


def new(
    table: Mapping[str, object], path: str = "t", kind: str = "t"
) -> tuple[Reader, list[ConfigProblem]]:
    found: list[ConfigProblem] = []
    return Reader(found, table, path, kind), found


def rendered(found: list[ConfigProblem]) -> list[str]:
    return [p.render("w.toml") for p in found]


def test_values_of_the_right_type_are_read_and_absent_ones_default() -> None:
    r, found = new({"s": "x", "n": 3, "f": 1.5, "b": True, "l": [], "d": {}})
    assert (r.get("s", str, ""), r.get("n", int, 0), r.get("f", float, 0.0)) == ("x", 3, 1.5)
    assert (r.get("b", bool, False), r.get("l", list, [1]), r.table("d")) == (True, [], {})
    assert r.get("missing", str, "default") == "default"
    assert found == []


def test_an_integer_is_a_number_but_a_boolean_is_not_an_integer() -> None:
    r, found = new({"f": 2, "n": True})
    assert r.get("f", float, 0.0) == 2.0
    assert isinstance(r.get("f", float, 0.0), float)
    assert r.get("n", int, 7) == 7
    assert rendered(found) == ["w.toml: t.n: expected an integer; got true"]


def test_a_wrong_type_is_named_with_what_was_found() -> None:
    r, found = new({"a": "x", "b": 1, "c": {"k": 1}, "d": [1], "e": False, "f": 1.5})
    r.get("a", int, 0)
    r.get("b", str, "")
    r.get("c", list, [])
    r.get("d", dict, {})
    r.get("e", float, 0.0)
    r.get("f", bool, False)
    assert rendered(found) == [
        'w.toml: t.a: expected an integer; got "x"',
        "w.toml: t.b: expected a string; got 1",
        "w.toml: t.c: expected an array; got a table",
        "w.toml: t.d: expected a table; got an array",
        "w.toml: t.e: expected a number; got false",
        "w.toml: t.f: expected true or false; got 1.5",
    ]


def test_a_required_key_that_is_missing_is_named_once() -> None:
    r, found = new({"here": "x"})
    assert r.required("here", str, "") == "x"
    assert r.required("gone", str, "fallback") == "fallback"
    r.finish()
    assert rendered(found) == ["w.toml: t.gone: is required"]


def test_a_parsed_value_reports_the_parsers_message() -> None:
    r, found = new({"ttl": "5 min", "ok": "2s"})
    assert r.parsed("ttl", parse_duration, None) is None
    assert r.parsed("ok", parse_duration, None) == 2.0
    assert r.parsed("absent", parse_duration, 9.0) == 9.0
    assert rendered(found) == [
        'w.toml: t.ttl: "5 min" is not a duration (try "300ms", "60s", "5m" or "1h")'
    ]


def test_arrays_name_each_bad_element_by_index() -> None:
    r, found = new({"s": ["a", 1, "b"], "t": [{"k": 1}, "x"]})
    assert r.strings("s") == ("a", "b")
    assert r.tables("t") == [("t.t[0]", {"k": 1})]
    assert rendered(found) == [
        "w.toml: t.s[1]: expected a string; got 1",
        'w.toml: t.t[1]: expected a table; got "x"',
    ]


def test_a_nested_reader_records_with_its_parent_under_its_own_path() -> None:
    r, found = new({"include": [{"srcc": "/a"}]}, "route[0]", "route")
    [(path, table)] = r.tables("include")
    inner = r.nested(table, path, "include")
    inner.finish()
    r.finish()
    assert rendered(found) == ["w.toml: route[0].include[0].srcc: unknown key (known keys here: )"]


def test_unknown_keys_list_the_known_ones_and_renamed_keys_name_the_new_one() -> None:
    r, found = new({"mode": "suspense", "colour": "red", "path": "/"}, "route[0]", "route")
    r.get("path", str, "/")
    r.get("origin", str, "")
    r.finish()
    assert rendered(found) == [
        'w.toml: route[0].mode: was renamed to "include_mode"; use include_mode = …',
        "w.toml: route[0].colour: unknown key (known keys here: origin, path)",
    ]


def test_the_top_level_names_keys_without_a_dot() -> None:
    r, found = new({"x": 1}, "", "")
    r.finish()
    assert rendered(found) == ["w.toml: x: unknown key (known keys here: )"]
