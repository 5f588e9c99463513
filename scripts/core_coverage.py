"""Branch coverage of Weaver's pure cores, each measured by its OWN unit tests only.

A core is logic with no I/O (STYLE.md rule 1): the weave state machine, the scanner,
freshness, cache keys, the cache's policy, the session's state and messages. Each is run
under coverage.py (branch) with just its test modules, so a core cannot pass on the back
of an integration test. Exits 1 when any core is under ``--fail-under`` (default 95).

Run: ``python scripts/core_coverage.py`` (scripts/test.sh runs it after pytest).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# core module (package path) -> its own test modules
CORES: dict[str, tuple[str, ...]] = {
    "proxy/weave.py": ("tests/proxy/test_weave.py",),
    "proxy/weave_parts.py": ("tests/proxy/test_weave_parts.py",),
    "proxy/weave_events.py": ("tests/proxy/test_weave_events.py", "tests/proxy/test_weave.py"),
    "proxy/scanner.py": ("tests/proxy/test_scanner.py",),
    "proxy/scanner_grammar.py": (
        "tests/proxy/test_scanner_grammar.py",
        "tests/proxy/test_scanner.py",
    ),
    "proxy/scanner_events.py": ("tests/proxy/test_scanner_events.py",),
    "cache/freshness.py": ("tests/cache/test_freshness.py",),
    "cache/keys.py": ("tests/cache/test_keys.py",),
    "cache/policy.py": ("tests/cache/test_policy.py",),
    "session/protocol.py": ("tests/session/test_protocol.py",),
    "session/messages.py": ("tests/session/test_messages.py",),
    "session/resume.py": ("tests/session/test_resume.py",),
    "session/housekeeping.py": ("tests/session/test_housekeeping.py",),
}


def measure(module: str, tests: tuple[str, ...], data_dir: Path) -> tuple[float, list[str]]:
    """Run ``tests`` under coverage; the branch coverage of ``module`` and what is missed."""
    data = data_dir / (module.replace("/", "_") + ".coverage")
    package = "weaver." + module.removesuffix(".py").replace("/", ".")
    run = [sys.executable, "-m", "coverage", "run", "--branch", f"--data-file={data}"]
    run += [f"--source={package}", "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests]
    subprocess.run(run, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    out = data_dir / "report.json"
    subprocess.run(
        [sys.executable, "-m", "coverage", "json", f"--data-file={data}", "-o", str(out), "-q"],
        cwd=ROOT,
        check=True,
    )
    report = json.loads(out.read_text())
    for name, facts in report["files"].items():
        if name.endswith(module):
            summary = facts["summary"]
            missed = [str(line) for line in facts["missing_lines"]]
            return float(summary["percent_covered"]), missed
    raise SystemExit(f"core_coverage: {module} was not measured by {', '.join(tests)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fail-under", type=float, default=95.0)
    args = parser.parse_args()
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'core module':28} {'branch cov':>10}  missed lines (by its own tests)")
        for module, tests in CORES.items():
            percent, missed = measure(module, tests, Path(tmp))
            shown = ", ".join(missed[:8]) + (" …" if len(missed) > 8 else "")
            print(f"{module:28} {percent:9.1f}%  {shown}")
            if percent < args.fail_under:
                failed.append(module)
    if failed:
        print(f"under {args.fail_under}%: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
