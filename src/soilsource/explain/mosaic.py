"""Per-sample sensitivity maps placed back on the region's imagery grid.

Occlusion gives one (H, W) map per sample, in the pixel frame of that sample's patch.
Neighbouring samples' patches overlap, so a place seen by several samples gets several
values; the region map is their mean. The mosaic is built tile by tile: for each output
tile only the patches that touch it are read, so memory is bounded by one tile plus the
maps in use, however large the region (``maps`` may be a :class:`numpy.memmap`).

Conventions
-----------
- Each map goes back where its patch was read: its upper-left pixel at grid pixel
  ``(row_off, col_off)``, the window origin the patch extractor reports
  (:attr:`soilsource.data.patches.Patches.row_off` and ``col_off``), so the centring rule
  lives in one place only. Parts of a patch beyond the raster edge are dropped.
- NaN inside a map (a pixel the patch did not see) contributes nothing.
- Nodata is NaN: sensitivity is a signed float with no value to spare, NaN cannot be
  mistaken for a real value, and GDAL, QGIS, rasterio and numpy all read it as missing.

Aggregation (``aggregation``)
-----------------------------
- ``"mean"``: the mean of the overlapping maps, as they are.
- ``"relative"``: the mean of each map minus the *expected map*, the mean of all the
  region's maps at the same offset from the patch centre (:func:`expected_map`). Every
  sample's map is a blob around its own centre (the network weighs the innermost ring
  most), so the plain mean mostly says where the samples are; what is left after taking
  away what any sample shows at that offset is where *this* landscape matters more than
  usual. It is signed: negative where a place matters less than the typical place at
  that distance from a sample.

Weights (``weights``): each sample's map times a factor before the mean, e.g. how far the
sample's measured value exceeds its limit (:func:`soilsource.pipeline.runner.sample_weights`, the
default of ``soilsource run``): a clean sample's map then counts zero, a contaminated
sample's in proportion to its contamination, and the map shows what the network reads as
the cause of the *measured* contamination around each sample.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window, subdivide

from soilsource.gisout import RasterStyle, cog_path
from soilsource.progress import track

NODATA = float("nan")
"""Value of pixels that no patch covers."""

TILE_PX = 512
"""Side of the output tiles (and GeoTIFF blocks): 1 MiB of float32 per tile."""

AGGREGATIONS = ("mean", "relative")
"""Ways of combining the per-sample maps (see the module docstring)."""

DEFAULT_AGGREGATION = "mean"

Maps = Sequence[np.ndarray] | np.ndarray
"""Per-sample sensitivity maps: a list of (S, S) arrays, or one (N, S, S) array."""


def _check_inputs(maps: Maps, row_off: np.ndarray, col_off: np.ndarray) -> None:
    # Mismatched arrays are a bug in the caller, not something a user can fix.
    if isinstance(maps, np.ndarray) and maps.ndim != 3:
        raise ValueError(f"maps must have shape (N, H, W), got {maps.shape}")
    n = len(maps)
    if row_off.ndim != 1 or col_off.ndim != 1 or len(row_off) != n or len(col_off) != n:
        raise ValueError(f"{n} maps but row_off {row_off.shape} and col_off {col_off.shape}")


def accumulate_window(
    maps: Maps,
    row_off: np.ndarray,
    col_off: np.ndarray,
    window: Window,
    samples: Sequence[int] | np.ndarray | None = None,
    expected: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum and count of every sample's map over one window of the grid.

    Parameters
    ----------
    maps:
        (N, H, W) per-sample sensitivity maps (any array indexable by sample).
    row_off, col_off:
        Grid pixel of each map's upper-left pixel (its patch's window origin).
    window:
        The part of the grid to fill (integer offsets and size).
    samples:
        Indices of the samples to consider (default: all); those whose patch misses the
        window add nothing.
    expected:
        (H, W) map subtracted from every sample's map (aggregation ``"relative"``).
    weights:
        (N,) factor of each sample's map (after ``expected``); the count is not weighted,
        so the mean is the weighted evidence per covering sample.

    Returns
    -------
    total, count:
        float64 sum and int32 number of maps covering each pixel of the window.

    Examples
    --------
    >>> maps = np.ones((2, 3, 3), dtype=np.float32)
    >>> maps[1] *= 3
    >>> total, count = accumulate_window(maps, [0, 0], [0, 1], Window(0, 0, 4, 2))
    >>> count
    array([[1, 2, 2, 1],
           [1, 2, 2, 1]], dtype=int32)
    >>> total / np.maximum(count, 1)
    array([[1., 2., 2., 3.],
           [1., 2., 2., 3.]])
    """
    win_row, win_col = int(window.row_off), int(window.col_off)
    height, width = int(window.height), int(window.width)
    total = np.zeros((height, width), dtype=np.float64)
    count = np.zeros((height, width), dtype=np.int32)
    if len(maps) == 0:
        return total, count
    ph, pw = _map_shape(maps)
    r0 = np.asarray(row_off, dtype=np.int64)
    c0 = np.asarray(col_off, dtype=np.int64)
    for i in range(len(maps)) if samples is None else samples:
        # Intersection of the patch with the window, in window coordinates.
        top, left = int(r0[i]) - win_row, int(c0[i]) - win_col
        y0, y1 = max(top, 0), min(top + ph, height)
        x0, x1 = max(left, 0), min(left + pw, width)
        if y0 >= y1 or x0 >= x1:
            continue
        part = np.asarray(maps[i][y0 - top : y1 - top, x0 - left : x1 - left], dtype=np.float64)
        if expected is not None:
            part = part - expected[y0 - top : y1 - top, x0 - left : x1 - left]
        if weights is not None:
            part = part * float(weights[i])
        seen = np.isfinite(part)
        total[y0:y1, x0:x1] += np.where(seen, part, 0.0)
        count[y0:y1, x0:x1] += seen
    return total, count


def expected_map(maps: Maps, chunk: int = 256) -> np.ndarray:
    """Mean of the maps at each offset in the patch: what any sample's map shows there.

    NaN entries are left out; an offset no map has a value at gets 0. Read ``chunk``
    maps at a time, so ``maps`` may be a :class:`numpy.memmap`.

    >>> maps = np.stack([np.full((2, 2), 1.0), np.full((2, 2), 3.0)])
    >>> maps[1, 0, 0] = np.nan
    >>> expected_map(maps)
    array([[1., 2.],
           [2., 2.]])
    """
    total = np.zeros(_map_shape(maps), dtype=np.float64)
    count = np.zeros_like(total)
    for start in range(0, len(maps), chunk):
        part = np.asarray(maps[start : start + chunk], dtype=np.float64)
        seen = np.isfinite(part)
        total += np.where(seen, part, 0.0).sum(axis=0)
        count += seen.sum(axis=0)
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def _expected_for(maps: Maps, aggregation: str) -> np.ndarray | None:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
    if aggregation == "relative" and len(maps):
        return expected_map(maps)
    return None


def _map_shape(maps: Maps) -> tuple[int, int]:
    shape = maps.shape[1:] if hasattr(maps, "shape") else np.shape(maps[0])
    return int(shape[0]), int(shape[1])


def _samples_by_tile(
    row_off: np.ndarray, col_off: np.ndarray, map_shape: tuple[int, int], tile_px: int
) -> dict[tuple[int, int], list[int]]:
    """Which samples' maps touch each tile (tile index = pixel // tile_px)."""
    ph, pw = map_shape
    tiles: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (top, left) in enumerate(zip(row_off.tolist(), col_off.tolist(), strict=True)):
        for ty in range(top // tile_px, (top + ph - 1) // tile_px + 1):
            for tx in range(left // tile_px, (left + pw - 1) // tile_px + 1):
                tiles[(ty, tx)].append(i)
    return tiles


def mosaic_sensitivity(
    maps: Maps,
    row_off: np.ndarray,
    col_off: np.ndarray,
    height: int,
    width: int,
    aggregation: str = "mean",
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Mean of the overlapping per-sample maps on a ``height`` x ``width`` grid, in memory.

    For small regions and tests; :func:`write_sensitivity` does the same tile by tile.
    Pixels no patch covers are NaN. ``aggregation="relative"`` subtracts the
    :func:`expected_map` from every map first.

    >>> maps = np.stack([np.full((2, 2), 1.0), np.full((2, 2), 3.0)])
    >>> mosaic_sensitivity(maps, np.array([0, 0]), np.array([0, 1]), 2, 4)
    array([[ 1.,  2.,  3., nan],
           [ 1.,  2.,  3., nan]], dtype=float32)
    >>> mosaic_sensitivity(maps, np.array([0, 0]), np.array([0, 1]), 2, 4, "relative")
    array([[-1.,  0.,  1., nan],
           [-1.,  0.,  1., nan]], dtype=float32)
    """
    row_off, col_off = np.asarray(row_off), np.asarray(col_off)
    _check_inputs(maps, row_off, col_off)
    expected = _expected_for(maps, aggregation)
    window = Window(0, 0, width, height)
    total, count = accumulate_window(
        maps, row_off, col_off, window, expected=expected, weights=weights
    )
    return _mean(total, count)


def _mean(total: np.ndarray, count: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, NODATA).astype(np.float32)


def write_sensitivity(
    path: str | os.PathLike[str],
    maps: Maps,
    row_off: np.ndarray,
    col_off: np.ndarray,
    *,
    transform: Affine,
    crs: CRS | str,
    width: int,
    height: int,
    tile_px: int = TILE_PX,
    aggregation: str = DEFAULT_AGGREGATION,
    model: str = "",
    weights: np.ndarray | None = None,
) -> Path:
    """Write the region's sensitivity mosaic as a float32 Cloud-Optimised GeoTIFF, atomically.

    Parameters
    ----------
    path:
        Output file, e.g. ``run/sensitivity/REGION.tif``.
    maps:
        (N, H, W) per-sample occlusion sensitivity maps, one per sample, in patch pixels.
    row_off, col_off:
        Grid pixel of each map's upper-left pixel: the window origins of the patches
        (``Patches.row_off``, ``Patches.col_off``).
    transform, crs, width, height:
        The imagery grid; the output is on exactly this grid.
    tile_px:
        Side of the tiles built one at a time (a multiple of 16: they are the GeoTIFF
        blocks). Memory is about ``12 * tile_px**2`` bytes plus the maps of the samples
        touching one tile.
    aggregation:
        ``"relative"`` (each map minus the region's :func:`expected_map`, one
        extra pass over the maps) or ``"mean"`` (the maps as they are; default).
    model:
        The model explained, for the ``MODEL`` tag; the QGIS style beside the file is a
        diverging ramp centred on 0 (:mod:`soilsource.gisout`).
    weights:
        Optional factor of each sample's map (e.g. its measured exceedance of its limit,
        :func:`soilsource.pipeline.runner.sample_weights`); pixels still divide by the number of
        covering maps.

    Returns
    -------
    The path written. Pixels no patch covers hold NaN (the file's nodata).
    """
    row_off = np.asarray(row_off, dtype=np.int64)
    col_off = np.asarray(col_off, dtype=np.int64)
    _check_inputs(maps, row_off, col_off)
    if tile_px <= 0 or tile_px % 16:
        raise ValueError(f"tile_px must be a positive multiple of 16, got {tile_px}")
    expected = _expected_for(maps, aggregation)
    by_tile = _samples_by_tile(row_off, col_off, _map_shape(maps), tile_px) if len(maps) else {}
    profile = {
        "driver": "GTiff",
        "dtype": "float32",
        "count": 1,
        "width": width,
        "height": height,
        "crs": crs,
        "transform": transform,
        "nodata": NODATA,
        "tiled": True,
        "blockxsize": tile_px,
        "blockysize": tile_px,
        "compress": "deflate",
        "predictor": 3,  # floating-point predictor: smaller files for smooth maps
        "BIGTIFF": "IF_SAFER",
    }
    style = RasterStyle(
        "signed", "occlusion sensitivity (drop in the model's prediction)", "1", model=model
    )
    with cog_path(path, style) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.update_tags(
            1,
            DESCRIPTION="occlusion sensitivity: mean over overlapping patches",
            AGGREGATION=aggregation + ("" if weights is None else ", weighted by sample"),
        )
        dst.set_band_description(1, "sensitivity")
        tiles = subdivide(Window(0, 0, width, height), tile_px, tile_px)
        for window in track(tiles, f"sensitivity mosaic {Path(path).stem}"):
            key = (int(window.row_off) // tile_px, int(window.col_off) // tile_px)
            samples = by_tile.get(key)
            if samples:
                total, count = accumulate_window(
                    maps, row_off, col_off, window, samples, expected=expected, weights=weights
                )
                block = _mean(total, count)
            else:  # written explicitly so that any TIFF reader sees nodata, not zeros
                block = np.full((int(window.height), int(window.width)), NODATA, np.float32)
            dst.write(block, 1, window=window)
    return Path(path)
