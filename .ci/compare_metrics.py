"""Are the quick demo's metrics.json identical on every Python? (last step of test-pythons)

    python .ci/compare_metrics.py [--skipped "3.12"] [--failed "3.13"] DIR/metrics/py*.json

Prints which Pythons ran, were skipped or failed, and whether the files are byte-identical;
where they differ, a unified diff of each against the first. Exit 0 when identical (or only
one file), 1 otherwise.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="py3.X.json, one per Python")
    parser.add_argument("--skipped", default="", help="Pythons not found (space-separated)")
    parser.add_argument("--failed", default="", help="Pythons that failed (space-separated)")
    args = parser.parse_args(argv)
    files = sorted((f for f in args.files if f.is_file()), key=lambda f: _version_key(f.stem))
    names = [f.stem.removeprefix("py") for f in files]
    print(f"test-pythons: demo metrics.json from Python {', '.join(names) or 'none'}")
    print(f"test-pythons: skipped (not on this machine): {args.skipped.strip() or 'none'}")
    print(f"test-pythons: failed: {args.failed.strip() or 'none'}")
    if len(files) < 2:
        print("test-pythons: fewer than two metrics.json, nothing to compare")
        return 0
    first, texts = files[0], [f.read_text(encoding="utf-8") for f in files]
    differing = [f for f, text in zip(files, texts, strict=True) if text != texts[0]]
    if not differing:
        size = len(texts[0].encode("utf-8"))
        print(f"test-pythons: metrics.json identical on Python {', '.join(names)} ({size} bytes)")
        return 0
    for f in differing:
        diff = difflib.unified_diff(
            texts[0].splitlines(keepends=True),
            f.read_text(encoding="utf-8").splitlines(keepends=True),
            fromfile=str(first),
            tofile=str(f),
        )
        sys.stdout.writelines(diff)
    others = ", ".join(f.stem for f in differing)
    print(f"test-pythons: metrics.json DIFFER: {others} vs {first.stem}")
    return 1


def _version_key(stem: str) -> tuple[int, ...]:
    """``py3.12`` -> (3, 12), so that 3.9 sorts before 3.11."""
    return tuple(int(part) for part in stem.removeprefix("py").split(".") if part.isdigit())


if __name__ == "__main__":
    sys.exit(main())
