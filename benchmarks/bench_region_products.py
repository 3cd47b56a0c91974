"""Region products (sensitivity mosaic, hotspot threshold and polygons, land-use statistics)
on a region larger than one would hold in memory: time and peak memory of each step.

Goal (SPEC "Scale"): every step reads and writes by windows, so its peak RSS stays far
below the size of the region's raster held whole (reported as "whole float32").

Inputs are generated in a temporary directory: N per-sample maps of 128 x 128 float32 on
disk (a ``.npy`` opened as a memory map, as a pipeline would keep them), sample pixels
uniform over the grid, and a land-use raster of 100-pixel parcels in 8 classes (uint8,
tiled). Each step runs in its own process so that its peak RSS is its own; the import
baseline (numpy, rasterio, geopandas, scipy) is measured the same way and shown.

Usage: ``python benchmarks/bench_region_products.py [--size 8000] [--samples 3000]``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PATCH_PX = 128
N_CLASSES = 8
CLASSES = {c: f"class_{c}" for c in range(1, N_CLASSES + 1)}


def _profile(size: int, dtype: str, nodata: float) -> dict:
    from rasterio.transform import from_origin

    return {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 1,
        "dtype": dtype,
        "crs": "EPSG:32649",
        "transform": from_origin(300_000, 2_700_000, 10, 10),
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "nodata": nodata,
    }


def prepare(tmp: Path, size: int, n_samples: int) -> None:
    """Write the maps (.npy), the sample pixels and the land-use raster."""
    import rasterio
    from rasterio.windows import Window

    rng = np.random.default_rng(0)
    maps = np.lib.format.open_memmap(
        tmp / "maps.npy", "w+", np.float32, (n_samples, PATCH_PX, PATCH_PX)
    )
    yy, xx = np.mgrid[:PATCH_PX, :PATCH_PX] - PATCH_PX / 2
    for i in range(0, n_samples, 256):
        n = min(256, n_samples - i)
        centre = rng.normal(0, 20, (n, 2, 1, 1))
        bump = np.exp(-((yy - centre[:, 0]) ** 2 + (xx - centre[:, 1]) ** 2) / 400)
        maps[i : i + n] = (bump * rng.normal(0.02, 0.05, (n, 1, 1))).astype(np.float32)
    maps.flush()
    pixels = rng.integers(0, size, (2, n_samples))
    np.save(tmp / "pixels.npy", pixels)
    parcels = rng.integers(1, N_CLASSES + 1, (size // 100 + 1, size // 100 + 1), dtype=np.uint8)
    with rasterio.open(tmp / "landuse.tif", "w", **_profile(size, "uint8", 0)) as dst:
        for row in range(0, size, 512):
            h = min(512, size - row)
            rows = parcels[(np.arange(row, row + h) // 100)]
            strip = rows[:, np.arange(size) // 100]
            dst.write(strip, 1, window=Window(0, row, size, h))


def step(name: str, tmp: Path, size: int, cache_mb: int) -> dict:
    """Run one step in this process; its seconds and peak RSS."""
    import rasterio
    import scipy.fft  # noqa: F401  (the import baseline)

    from soilsource.analysis import hotspots, zones
    from soilsource.explain import mosaic

    with rasterio.Env(GDAL_CACHEMAX=cache_mb):
        return _step(name, tmp, size, hotspots, zones, mosaic)


def _step(name: str, tmp: Path, size: int, hotspots, zones, mosaic) -> dict:
    start = time.perf_counter()
    detail = ""
    sensitivity = tmp / "sensitivity.tif"
    if name == "mosaic":
        maps = np.load(tmp / "maps.npy", mmap_mode="r")
        row_off, col_off = np.load(tmp / "pixels.npy") - PATCH_PX // 2
        profile = _profile(size, "float32", np.nan)
        mosaic.write_sensitivity(
            sensitivity,
            maps,
            row_off,
            col_off,
            transform=profile["transform"],
            crs=profile["crs"],
            width=size,
            height=size,
        )
        detail = f"{len(maps)} maps of {PATCH_PX}^2"
    elif name == "threshold":
        threshold = hotspots.raster_hotspot_threshold(sensitivity)
        detail = f"threshold {threshold:.4g}"
    elif name == "hotspots":
        frame = hotspots.region_hotspots(sensitivity, tmp / "landuse.tif", CLASSES)
        detail = f"{len(frame)} polygons"
    elif name == "zones":
        result = zones.region_landuse_statistics(sensitivity, tmp / "landuse.tif", CLASSES)
        detail = f"q {result.geodetector['q']:.3f}, cells of {result.geodetector['cell_px']} px"
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_mib": peak, "detail": detail}


def _child(args: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8000, help="region side in pixels")
    parser.add_argument("--samples", type=int, default=3000)
    parser.add_argument("--cache-mb", type=int, default=64, help="GDAL block cache (MB)")
    parser.add_argument("--step", help=argparse.SUPPRESS)
    parser.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step:
        print(json.dumps(step(args.step, args.dir, args.size, args.cache_mb)))
        return 0

    whole = args.size**2 * 4 / 2**20
    with tempfile.TemporaryDirectory(prefix="bench_region_") as tmp:
        start = time.perf_counter()
        prepare(Path(tmp), args.size, args.samples)
        print(
            f"region {args.size} x {args.size} px ({whole:,.0f} MiB as whole float32), "
            f"{args.samples} samples, inputs written in {time.perf_counter() - start:.0f} s\n"
        )
        print("| step | seconds | peak RSS (MiB) | above baseline (MiB) | detail |")
        print("| --- | ---: | ---: | ---: | --- |")
        base = 0.0
        for name in ("baseline", "mosaic", "threshold", "hotspots", "zones"):
            options = ["--size", str(args.size), "--cache-mb", str(args.cache_mb)]
            r = _child(["--step", name, "--dir", tmp, *options])
            base = r["peak_mib"] if name == "baseline" else base
            print(
                f"| {name} | {r['seconds']:.1f} | {r['peak_mib']:,.0f} "
                f"| {r['peak_mib'] - base:,.0f} | {r['detail']} |"
            )
        print(
            "\nbaseline = the same process doing only its imports (soilsource.explain imports "
            f"torch); GDAL_CACHEMAX {args.cache_mb} MB (GDAL's block cache counts in RSS; "
            "its default is 5 % of RAM); the mosaic's figure includes the pages of the "
            "memory-mapped maps it read. Goal: every step's memory above baseline far below "
            "the whole-raster size."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
