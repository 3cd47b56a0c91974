"""Cost of the report's map layers on a large region: time, peak memory, bytes in the page.

The report reads imagery and the sensitivity map decimated (rasterio ``out_shape``) to at
most 900 px, so its memory should stay far below the size of the rasters however large the
region. This writes a tiled 3-band uint16 image and a float32 sensitivity raster of
``--size-px`` squared pixels (strip by strip), then, in a fresh process each, renders the
true-colour JPEG and the sensitivity overlay as the report does and reports wall time,
the process's peak RSS and the size of the result.

Usage: ``python benchmarks/bench_report.py [--size-px 6000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window


def write_raster(path: Path, size: int, bands: int, dtype: str, seed: int = 0) -> None:
    """A tiled GeoTIFF of smooth noise, written 512 rows at a time (never whole in memory)."""
    rng = np.random.default_rng(seed)
    profile = dict(
        driver="GTiff", width=size, height=size, count=bands, dtype=dtype, crs="EPSG:32649",
        transform=from_origin(500_000, 2_600_000, 10, 10), tiled=True, blockxsize=256,
        blockysize=256, compress="deflate", nodata=0 if dtype == "uint16" else float("nan"),
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for row in range(0, size, 512):
            rows = min(512, size - row)
            base = (
                np.sin(np.arange(size) / 97.0)[None, :]
                + np.cos((row + np.arange(rows)) / 53.0)[:, None]
            )
            for b in range(bands):
                noise = rng.normal(0, 0.3, (rows, size))
                block = base * (b + 1) + noise
                if dtype == "uint16":
                    block = np.clip(1000 + 300 * block, 1, 65535)
                else:
                    block = 1e-3 * block
                dst.write(block.astype(dtype), b + 1, window=Window(0, row, size, rows))


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM (fresh after exec), not ru_maxrss.

    ru_maxrss of a child started by fork+exec keeps the parent's peak, which here is the
    raster writer's; the memory map's high-water mark starts again at exec.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def render(kind: str, path: str) -> dict:
    """Render one layer as the report does (this runs in its own process)."""
    from matplotlib.colors import Normalize  # noqa: F401  (imports counted in the baseline)

    import soilsource.report.figures

    if os.environ.get("BENCH_CACHE_MB"):
        soilsource.report.figures.READ_CACHE_MB = int(os.environ["BENCH_CACHE_MB"])
    from soilsource.report.figures import (
        map_grid,
        overlay_png,
        read_on_grid,
        symmetric_norm,
        true_colour_jpeg,
    )

    before = peak_rss_mb()
    start, cpu = time.perf_counter(), time.process_time()
    grid = map_grid(path)
    if kind == "imagery":
        data = true_colour_jpeg(path, grid)
    else:
        values = read_on_grid(path, grid)[0]
        data = overlay_png(values, "RdBu_r", symmetric_norm(values), fade_centre=True)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = peak_rss_mb()
    return {
        "seconds": seconds,
        "cpu": cpu,
        "rss_before_mb": before,
        "peak_mb": peak,
        "grid": f"{grid.width} x {grid.height}",
        "kb": len(data) / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-px", type=int, default=6000)
    parser.add_argument("--render", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.render:
        print(json.dumps(render(*args.render)))
        return
    size = args.size_px
    with tempfile.TemporaryDirectory() as tmp:
        layers = {
            "imagery": (Path(tmp) / "imagery.tif", 3, "uint16"),
            "sensitivity": (Path(tmp) / "sensitivity.tif", 1, "float32"),
        }
        start = time.perf_counter()
        for path, bands, dtype in layers.values():
            write_raster(path, size, bands, dtype)
        print(f"Report map layers of a {size} x {size} px region "
              f"(rasters written in {time.perf_counter() - start:.0f} s)\n")  # fmt: skip
        print("| layer | raster (uncompressed) | file | display grid | wall s | CPU s | "
              "peak RSS (process) | RSS after imports | in the page |")  # fmt: skip
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for kind, (path, bands, dtype) in layers.items():
            out = subprocess.run(
                [sys.executable, __file__, "--render", kind, str(path)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            r = json.loads(out.stdout.strip().splitlines()[-1])
            raw = size * size * bands * np.dtype(dtype).itemsize / 2**20
            print(
                f"| {kind} | {raw:.0f} MiB | {path.stat().st_size / 2**20:.0f} MiB | {r['grid']} "
                f"| {r['seconds']:.1f} | {r['cpu']:.1f} | {r['peak_mb']:.0f} MiB "
                f"| {r['rss_before_mb']:.0f} MiB "
                f"| {r['kb']:.0f} kB |"
            )
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nDecimated reads (rasterio out_shape, average resampling), no overviews in the "
          f"files; load average {load} on {os.cpu_count()} CPUs.")  # fmt: skip


if __name__ == "__main__":
    main()
