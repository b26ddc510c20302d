"""Runs every benchmark module in this folder (each defines `main() -> str`, its one-line summary).

The summaries are printed again at the end, one per line, so that runs can be compared at a glance.
`python -m tests.benchmarks NAME...` runs only the named ones.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    names = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if not m.name.startswith("_"))
    selected = [n for n in names if not argv or n in argv]
    summaries = []
    for name in selected:
        module = importlib.import_module(f"tests.benchmarks.{name}")
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        summaries.append(module.main())
        print(f"   ({time.perf_counter() - t0:.1f}s)", flush=True)
    print()
    for line in summaries:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
