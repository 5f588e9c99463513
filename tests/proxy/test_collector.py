"""The collector of a serving process (proxy/collector.py), seen in real processes: the
test's own process keeps CPython's defaults."""

from __future__ import annotations

import subprocess
import sys

from weaver.proxy.collector import THRESHOLDS

PROBE = "import gc; print(*gc.get_threshold(), gc.get_freeze_count() > 0)"


def python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def test_a_serving_process_collects_rarely_and_never_walks_what_startup_made() -> None:
    tuned = python(f"from weaver.proxy import collector; collector.tune_for_serving(); {PROBE}")
    assert tuned == " ".join(map(str, THRESHOLDS)) + " True"
    assert THRESHOLDS[0] > 700  # CPython's default, which a fan-out triggered every time


def test_the_loop_every_serving_command_runs_on_is_tuned_and_a_library_caller_is_not() -> None:
    served = python(
        "import asyncio; from weaver.proxy import worker; "
        f"worker.run(lambda: asyncio.sleep(0)); {PROBE}"
    )
    assert served.split()[:3] == [str(t) for t in THRESHOLDS]
    untouched = python(f"import weaver.proxy.app, weaver.proxy.worker; {PROBE}")
    assert untouched.split()[0] == "700"
