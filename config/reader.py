"""Reading typed values out of one TOML table, recording every problem with its key path.

:class:`Reader` never raises: a missing, mistyped or unknown key becomes a
:class:`~weaver.config.errors.ConfigProblem` naming ``route[2].include[0].mode`` and the fix,
and reading goes on with the default, so one pass over a file reports everything wrong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TypeVar

from weaver.config.errors import ConfigProblem

T = TypeVar("T")

# Keys that were renamed: old key path suffix -> new name. A file using an old name gets an
# error naming the new one instead of a bare "unknown key".
RENAMED_KEYS: Mapping[str, str] = {
    "route.mode": "include_mode",
    "route.timeout": "fragment_timeout",
    "cache.path": "dir",
    "cache.size": "max_size",
}


class Reader:
    """Reads typed values out of one TOML table, recording problems instead of raising."""

    def __init__(
        self, problems: list[ConfigProblem], table: Mapping[str, object], path: str, kind: str
    ) -> None:
        self._problems = problems
        self._table = table
        self._path = path
        self._kind = kind
        self._seen: set[str] = set()

    def _key_path(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def problem(self, key: str, message: str) -> None:
        self._problems.append(ConfigProblem(self._key_path(key), message))

    def get(self, key: str, kind: type[T], default: T) -> T:
        self._seen.add(key)
        if key not in self._table:
            return default
        value = self._table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)  # type: ignore[return-value]  # int is accepted for float
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.problem(key, f"expected {_type_name(kind)}; got {_show(value)}")
            return default
        return value

    def required(self, key: str, kind: type[T], default: T) -> T:
        if key not in self._table:
            self._seen.add(key)
            self.problem(key, "is required")
            return default
        return self.get(key, kind, default)

    def parsed(self, key: str, parse: Callable[[str], T], default: T) -> T:
        text = self.get(key, str, None)  # None marks "absent"
        if text is None:
            return default
        try:
            return parse(text)
        except ValueError as exc:
            self.problem(key, str(exc))
            return default

    def strings(self, key: str) -> tuple[str, ...]:
        values = self.get(key, list, [])
        out: list[str] = []
        for index, value in enumerate(values):
            if isinstance(value, str):
                out.append(value)
            else:
                self.problem(f"{key}[{index}]", f"expected a string; got {_show(value)}")
        return tuple(out)

    def tables(self, key: str) -> list[tuple[str, Mapping[str, object]]]:
        values = self.get(key, list, [])
        out: list[tuple[str, Mapping[str, object]]] = []
        for index, value in enumerate(values):
            if isinstance(value, dict):
                out.append((f"{self._key_path(key)}[{index}]", value))
            else:
                self.problem(f"{key}[{index}]", f"expected a table; got {_show(value)}")
        return out

    def table(self, key: str) -> Mapping[str, object]:
        return self.get(key, dict, {})

    def nested(self, table: Mapping[str, object], path: str, kind: str) -> Reader:
        """A reader of ``table`` (at key path ``path``, renames looked up under ``kind``)
        that records its problems with this one's."""
        return Reader(self._problems, table, path, kind)

    def finish(self) -> None:
        """Record every key of the table that nobody read as unknown."""
        for key in self._table:
            if key in self._seen:
                continue
            renamed = RENAMED_KEYS.get(f"{self._kind}.{key}")
            if renamed is not None:
                self.problem(key, f'was renamed to "{renamed}"; use {renamed} = …')
            else:
                known = ", ".join(sorted(self._seen))
                self.problem(key, f"unknown key (known keys here: {known})")


def _type_name(kind: type[object]) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "true or false",
        list: "an array",
        dict: "a table",
    }.get(kind, kind.__name__)


def _show(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return repr(value)
