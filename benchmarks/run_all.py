"""Run the benchmarks of the project and write their tables to ``docs/benchmarks.md``.

Each ``benchmarks/bench_*.py`` is a script whose ``main()`` prints markdown tables; it runs
in its own process so that peak-memory figures (RSS) are its own. Its printed output goes
into its own section of ``docs/benchmarks.md`` with the command, the date, the exit code,
the wall time and the machine (CPU model, cores, RAM, load average, torch threads), so
every number in the docs says where it came from.

Usage::

    make bench                                   # every benchmark, the whole page
    python benchmarks/run_all.py bench_zones     # only that section is replaced
    python benchmarks/run_all.py zones occlusion # names with or without 'bench_'
    python benchmarks/run_all.py --list

Sections of benchmarks not run are kept as they were; the page is written atomically.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from soilsource.atomic import write_text_atomic

HERE = Path(__file__).resolve().parent
PAGE = HERE.parent / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Written by `make bench` (`python benchmarks/run_all.py`); do not edit by hand. Each section
is the printed output of one `benchmarks/bench_*.py` with the command that produced it, when,
and on what machine. `python benchmarks/run_all.py NAME` reruns one benchmark and replaces
only its section. Timings on a shared machine vary: read them with the load average beside
them.
"""
_SECTION = re.compile(
    r"<!-- bench:(?P<name>[\w.-]+) start -->\n.*?<!-- bench:(?P=name) end -->\n", re.DOTALL
)


def scripts() -> list[Path]:
    """Every benchmark script, by name."""
    return sorted(HERE.glob("bench_*.py"))


def select(names: list[str], available: list[Path]) -> list[Path]:
    """The scripts named (``bench_x``, ``x`` or ``bench_x.py``); all when none are.

    Raises
    ------
    ValueError
        A name matches no benchmark (the message lists the known names).
    """
    if not names:
        return available
    by_stem = {s.stem: s for s in available}
    chosen = []
    for name in names:
        stem = name.removesuffix(".py")
        stem = stem if stem.startswith("bench_") else f"bench_{stem}"
        if stem not in by_stem:
            known = ", ".join(by_stem)
            raise ValueError(f"no benchmark '{name}' (known: {known})")
        chosen.append(by_stem[stem])
    return chosen


def machine() -> str:
    """One line describing the machine: CPU model, cores, RAM, load, torch threads."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    parts = [cpu, f"{os.cpu_count()} logical cores"]
    try:
        import psutil

        parts.append(f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM")
    except ImportError:  # pragma: no cover - psutil is a dependency
        pass
    if hasattr(os, "getloadavg"):
        parts.append("load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    try:
        import torch

        parts.append(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
        if torch.cuda.is_available():
            parts.append(f"GPU {torch.cuda.get_device_name(0)}")
    except ImportError:  # pragma: no cover
        pass
    parts.append(f"Python {platform.python_version()}, {platform.system()} {platform.release()}")
    return "; ".join(parts)


def run_one(script: Path, extra: list[str] | None = None, tag: str = "") -> tuple[str, int]:
    """Run one benchmark (output streamed to the console); its section and exit code.

    ``extra`` are arguments for the script; ``tag`` names a section of its own
    (``bench_x.tag``), so runs of one script with different arguments keep their tables.
    """
    extra = list(extra or [])
    command = " ".join([f"python benchmarks/{script.name}", *extra])
    name = f"{script.stem}.{tag}" if tag else script.stem
    before = machine()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    start = time.perf_counter()
    # Unbuffered, so that its tables appear on the console as they are printed.
    proc = subprocess.Popen(
        [sys.executable, str(script), *extra],
        stdout=subprocess.PIPE,
        text=True,
        cwd=HERE.parent,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        print(line, end="", flush=True)
        lines.append(line)
    rc = proc.wait()
    seconds = time.perf_counter() - start
    load = f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "?"
    status = "ok" if rc == 0 else f"**FAILED (exit {rc})**"
    body = "".join(lines).strip()
    return (
        f"<!-- bench:{name} start -->\n"
        f"## {name}\n\n"
        f"- command: `{command}`\n"
        f"- run: {started}, {seconds:.0f} s, {status}\n"
        f"- machine at start: {before}\n"
        f"- load average (1 min) at the end: {load}\n\n"
        f"{body}\n\n"
        f"<!-- bench:{name} end -->\n"
    ), rc


def merge(page: str, sections: dict[str, str], order: list[str]) -> str:
    """The page with ``sections`` replaced or added; other sections kept, in ``order``."""
    existing = {m.group("name"): m.group(0) for m in _SECTION.finditer(page)}
    existing.update(sections)
    names = [n for n in order if n in existing] + sorted(set(existing) - set(order))
    return HEADER + "".join("\n" + existing[n] for n in names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--out", type=Path, default=PAGE, help="page to update")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--args", default="", help="arguments for the (one) benchmark named")
    parser.add_argument("--tag", default="", help="section suffix for a run with --args")
    args = parser.parse_args(argv)
    available = scripts()
    if args.list:
        print("\n".join(s.stem for s in available))
        return 0
    try:
        chosen = select(args.names, available)
    except ValueError as exc:
        print(f"run_all: {exc}", file=sys.stderr)
        return 2
    extra = args.args.split()
    if extra and len(chosen) != 1:
        print("run_all: --args needs exactly one benchmark named", file=sys.stderr)
        return 2
    failed = []
    for script in chosen:
        print(f"\n## {script.stem}  (python benchmarks/{script.name})\n", flush=True)
        section, rc = run_one(script, extra, args.tag)
        name = f"{script.stem}.{args.tag}" if args.tag else script.stem
        if rc != 0:
            failed.append(script.stem)
        # Written after each benchmark, so a long run interrupted later keeps what is done.
        page = args.out.read_text(encoding="utf-8") if args.out.is_file() else ""
        text = merge(page, {name: section}, [s.stem for s in available])
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, text)
        print(f"\n[{name}: section written to {args.out}]", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
