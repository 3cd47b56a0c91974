"""Scale: a probability map of a 20,000 x 20,000 px region, and 1, 2 and 4 Dask workers.

A synthetic 6-band uint16 region (tiled GeoTIFF, 256 px blocks, written window by window
from a few textured 1024 px tiles; about 4.8 GB uncompressed, in a temporary directory that
is deleted afterwards) and SI-LICNet at the default 128 px patch **with random weights**
(timing does not depend on the weights). The map is written exactly as ``soilsource run``
writes ``probability/REGION.tif``
(:func:`soilsource.mapping.probability.write_probability_map`: 512 px tiles, each read by window
inside its task, written as it arrives).

Table 1, the full region: by default only the first ``--rows`` complete rows of tiles are
computed (each row is 512 x 20,000 px, 40 tiles) and the time for the whole region is
**extrapolated** from them (labelled so); ``--full`` maps every tile (hours on 2 cores).
Peak RSS is sampled every 0.2 s over this process and all its children (Dask workers).

Table 2, a ``--crop`` x ``--crop`` window of the same region written with the local session
(the default, one task per core with one torch thread each; and one task at a time with
all cores as torch threads) and with a Dask ``LocalCluster`` of 1, 2 and 4 worker processes
(one thread each; torch threads per worker = cores // workers), cluster start-up reported
apart from the map time (start-up includes each worker importing torch and soilsource).
``--rows 0`` skips table 1.

Usage: ``python benchmarks/bench_scale.py [--size 20000] [--rows 1] [--full] [--crop 1536]
[--workers 1 2 4]``. The default run takes about 8-10 minutes on 2 busy cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import rasterio
import torch
from rasterio.transform import from_origin
from rasterio.windows import Window

from soilsource.data.patches import BandStats
from soilsource.inputs.imagery import describe_raster
from soilsource.mapping.probability import write_probability_map
from soilsource.models import SILICNet
from soilsource.models.silicnet import random_silicnet
from soilsource.runtime import compute_session

BANDS, PATCH_PX, TILE_PX, TEXTURE_PX = 6, 128, 512, 1024


class PeakRSS:
    """Peak resident memory of this process plus its children, sampled in a thread.

    Also the CPU seconds (user + system) they used, which, unlike wall time, do not grow
    when other jobs share the cores: pixels per CPU second is the cost figure that
    carries over to another machine.
    """

    def __init__(self, every_s: float = 0.2) -> None:
        self.every_s, self.peak = every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):  # a child that just ended
                total += child.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            self._children_cpu.update(_children_cpu())
            self._stop.wait(self.every_s)

    def __enter__(self) -> PeakRSS:
        self.peak = self._sample()
        self._children_cpu: dict[int, float] = {}
        self._cpu0 = _own_cpu()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.cpu_s = _own_cpu() - self._cpu0 + sum(self._children_cpu.values())

    @property
    def gib(self) -> float:
        return self.peak / 2**30


def _own_cpu() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def _children_cpu() -> dict[int, float]:
    """CPU seconds of each live child (workers), by pid: the last sample of each counts."""
    out = {}
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            out[child.pid] = times.user + times.system
    return out


def textures(seed: int = 0) -> np.ndarray:
    """Four 6-band 1024 px uint16 tiles: smooth fields, parcels and noise, like imagery."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:TEXTURE_PX, 0:TEXTURE_PX].astype(np.float32) / TEXTURE_PX
    tiles = np.empty((4, BANDS, TEXTURE_PX, TEXTURE_PX), np.uint16)
    for k in range(4):
        field = np.sin(2 * np.pi * (rng.uniform(1, 4) * xx + rng.uniform(0, 1))) + np.cos(
            2 * np.pi * (rng.uniform(1, 4) * yy + rng.uniform(0, 1))
        )
        parcels = rng.integers(0, 5, (16, 16)).repeat(64, 0).repeat(64, 1).astype(np.float32)
        for b in range(BANDS):
            value = 1500 + 300 * field + 200 * (parcels - 2) * (1 + 0.3 * b)
            value += rng.normal(0, 60, value.shape)
            tiles[k, b] = value.clip(1, 65535)
    return tiles


def write_region(path: Path, size: int) -> None:
    """A ``size`` x ``size`` x 6 uint16 tiled GeoTIFF, written window by window."""
    tiles = textures()
    profile = dict(
        driver="GTiff", width=size, height=size, count=BANDS, dtype="uint16", nodata=0,
        crs="EPSG:32649", transform=from_origin(400000, 2600000, 10, 10),
        tiled=True, blockxsize=256, blockysize=256, interleave="pixel", BIGTIFF="YES",
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        for r in range(0, size, TEXTURE_PX):
            for c in range(0, size, TEXTURE_PX):
                h, w = min(TEXTURE_PX, size - r), min(TEXTURE_PX, size - c)
                tile = tiles[(r // TEXTURE_PX * 7 + c // TEXTURE_PX * 3) % 4]
                dst.write(tile[:, :h, :w], window=Window(c, r, w, h))


def random_model() -> SILICNet:
    """SI-LICNet (6 bands, 128 px) with random weights and BatchNorm statistics."""
    return random_silicnet(BANDS, PATCH_PX, spread=False)


def stats() -> BandStats:
    return BandStats(
        np.full(BANDS, 1500, np.float32), np.full(BANDS, 400, np.float32), ("b",) * BANDS
    )


def full_region(args, folder: Path, model: SILICNet) -> None:
    path = folder / "region.tif"
    start = time.perf_counter()
    write_region(path, args.size)
    written_s = time.perf_counter() - start
    raster = describe_raster(path)
    rows = -(-args.size // TILE_PX) if args.full else args.rows
    height = min(args.size, rows * TILE_PX)
    # The first `rows` tile rows, as a raster of that height (same tiles, same tasks).
    part = raster if args.full else _first_rows(raster, height)
    pixels = part.width * part.height
    with PeakRSS() as rss:
        start = time.perf_counter()
        write_probability_map(folder / "probability.tif", model, stats(), part, progress=False)
        seconds = time.perf_counter() - start
    total = args.size * args.size
    print(
        f"Region {args.size:,} x {args.size:,} px x {BANDS} bands uint16 (written in "
        f"{written_s:.0f} s, {path.stat().st_size / 2**30:.1f} GiB), SI-LICNet {PATCH_PX} px "
        f"patches, random weights; tiles of {TILE_PX} px; local session (default: "
        f"{torch.get_num_threads()} tasks at a time, 1 torch thread each); load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (shared machine).\n"
    )
    print(
        "| what | pixels mapped | wall s | pixels / s | CPU s | pixels / CPU s "
        "| peak RSS (GiB, with children) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    kind = "all tiles" if args.full else f"first {rows} tile row(s), measured"
    print(
        f"| {kind} | {pixels:,} | {seconds:.0f} | {pixels / seconds:,.0f} | {rss.cpu_s:.0f} "
        f"| {pixels / rss.cpu_s:,.0f} | {rss.gib:.2f} |"
    )
    if not args.full:
        scale = total / pixels
        print(
            f"| whole region, **extrapolated** | {total:,} | {seconds * scale:,.0f} "
            f"({seconds * scale / 3600:.1f} h) | {pixels / seconds:,.0f} | "
            f"{rss.cpu_s * scale:,.0f} | {pixels / rss.cpu_s:,.0f} | (bounded: same tiles) |"
        )


def _first_rows(raster, height: int):
    import dataclasses

    return dataclasses.replace(raster, height=height)


def workers_table(args, folder: Path, model: SILICNet) -> None:
    path = folder / "crop.tif"
    write_region(path, args.crop)  # the same textures: the upper-left crop of the region
    raster = describe_raster(path)
    pixels, tiles = args.crop * args.crop, (-(-args.crop // TILE_PX)) ** 2
    print(
        f"\n{args.crop} x {args.crop} px crop of the same region ({tiles} "
        f"tiles of {TILE_PX} px); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
        "CPUs (shared machine). Start-up: creating the session (cluster and workers).\n"
    )
    print(
        "| session | start-up s | map s | pixels / s | speed-up vs default | CPU s | peak RSS GiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    cores = torch.get_num_threads()
    setups = [
        (f"local (default): {cores} tasks at a time, 1 torch thread each", {}),
        (f"local: 1 task at a time, {cores} torch threads", {"local_threads": 1}),
    ]
    setups += [(f"Dask LocalCluster, {n} worker(s)", {"workers": n}) for n in args.workers]
    reference = None
    for name, kwargs in setups:
        with PeakRSS() as rss:
            start = time.perf_counter()
            with compute_session(**kwargs) as session:
                up = time.perf_counter() - start
                start = time.perf_counter()
                write_probability_map(
                    folder / "p.tif", model, stats(), raster, progress=False, session=session
                )
                seconds = time.perf_counter() - start
        reference = reference or seconds
        print(
            f"| {name} | {up:.1f} | {seconds:.1f} | {pixels / seconds:,.0f} "
            f"| {reference / seconds:.2f}x | {rss.cpu_s:.0f} | {rss.gib:.2f} |",
            flush=True,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20_000)
    parser.add_argument("--rows", type=int, default=1, help="tile rows measured (not --full)")
    parser.add_argument("--full", action="store_true", help="map the whole region (hours)")
    parser.add_argument("--crop", type=int, default=1024)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument("--dir", type=Path, default=None, help="temporary folder (default /tmp)")
    args = parser.parse_args(argv)
    model = random_model()
    folder = Path(tempfile.mkdtemp(prefix="bench_scale_", dir=args.dir))
    try:
        if args.rows or args.full:
            full_region(args, folder, model)
        if args.workers or args.crop:
            workers_table(args, folder, model)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
