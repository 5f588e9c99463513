"""The root of Weaver's error tree and the config layer's errors.

Every error Weaver raises on purpose derives from :class:`WeaverError`; each package's
``errors.py`` adds what its edge needs (a close code, an HTTP status). Messages name the
thing, the value, the limit and the fix, because operators read them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class WeaverError(Exception):
    """Base class of every error Weaver raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a config file.

    Attributes:
        path: the key path inside the file, e.g. ``route[2].include[0].mode``.
        message: what is wrong and, where possible, how to fix it.
    """

    path: str
    message: str

    def render(self, file: str) -> str:
        where = f"{file}: {self.path}" if self.path else file
        return f"{where}: {self.message}"


class ConfigError(WeaverError):
    """A config file that cannot be used; carries every problem found, not just the first."""

    def __init__(self, file: str, problems: Sequence[ConfigProblem]) -> None:
        self.file = file
        self.problems = tuple(problems)
        super().__init__("\n".join(p.render(file) for p in self.problems))
