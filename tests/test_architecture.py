"""The map in docs/architecture.md and the house rules of issue 11, kept true.

Every source module is named in the map's module table and every module the table names
exists; each has its test module (tests/<package>/test_<module>.py); none is over 400
lines (past that, a module is split along a responsibility: STYLE.md rule 5).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("config", "cache", "session", "proxy")
MAX_LINES = 400


def source_modules() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if path.name != "__init__.py":
                found.append(path.relative_to(ROOT).as_posix())
    return sorted(found)


def mapped_modules() -> list[str]:
    text = (ROOT / "docs" / "architecture.md").read_text()
    return sorted(re.findall(r"^\| `([a-z0-9_/]+\.py)` \|", text, flags=re.MULTILINE))


def test_the_module_table_names_every_source_module_and_nothing_else() -> None:
    modules, mapped = source_modules(), mapped_modules()
    assert len(modules) > 80  # the glob found the packages
    assert sorted(set(modules) - set(mapped)) == [], "add these to docs/architecture.md"
    assert sorted(set(mapped) - set(modules)) == [], "these are gone: drop them from the map"
    assert len(mapped) == len(set(mapped)), "a module is named twice"


def test_each_source_module_has_its_test_module() -> None:
    missing = []
    for module in source_modules():
        folder, _, name = module.rpartition("/")
        if not (ROOT / "tests" / folder / f"test_{name}").exists():
            missing.append(f"{module}: tests/{folder}/test_{name}")
    assert missing == []


def test_no_source_module_is_over_the_line_bound() -> None:
    long = {}
    for module in source_modules():
        lines = len((ROOT / module).read_text().splitlines())
        if lines > MAX_LINES:
            long[module] = lines
    assert long == {}, f"split these along a responsibility (bound {MAX_LINES} lines)"
