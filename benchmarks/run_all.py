"""Run every benchmark of the project (``benchmarks/bench_*.py``) and print their tables.

Each benchmark is a script with a ``main()`` that prints a table; it runs in its own
process so that peak-memory figures (RSS) are its own. Usage: ``make bench`` or
``python benchmarks/run_all.py [NAME ...]`` to run some of them.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(names: list[str]) -> int:
    scripts = sorted(HERE.glob("bench_*.py"))
    if names:
        scripts = [s for s in scripts if any(n in s.stem for n in names)]
    failed = []
    for script in scripts:
        print(f"\n## {script.stem}  (python benchmarks/{script.name})\n", flush=True)
        start = time.perf_counter()
        rc = subprocess.call([sys.executable, str(script)])
        print(f"\n[{script.stem}: exit {rc}, {time.perf_counter() - start:.0f} s]", flush=True)
        if rc != 0:
            failed.append(script.stem)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
