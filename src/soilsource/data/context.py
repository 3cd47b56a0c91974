"""Context bands: every imagery band smoothed over a few hundred metres, beside the band itself.

Why. Pollution travels: stack plumes deposit over kilometres downwind, rivers carry Cd to
the fields they irrigate, geology sets the background over hundreds of metres. A patch
sees only its own square (640 m in the demo). In the synthetic city the strongest
correlate of a sample's Cd against its own limit is the atmospheric deposition (Spearman
0.58-0.73 in five of six regions), whose sources often lie outside the patch. A context
band gives every pixel of a patch the average of its surroundings at scale ``sigma_m``
(a Gaussian of that standard deviation), so the patch carries what lies around it too.

The context bands are inputs like any other, for every model alike (SI-LICNet, the forest,
MobileNet): occlusion replaces them in its window like the other bands (still equal to
Captum's), dense maps read them like the other bands (still equal to patch-by-patch).

How. For each ``sigma_m`` the raster is read once at reduced resolution, ``f = max(1,
sigma_px // 4)`` pixels per cell (GDAL's average, nodata left out): a 40,000 px scene of 10
m pixels becomes a 6,667 px grid at 250 m, a 1,600 px grid at 1 km. There each band is
smoothed with a normalised Gaussian of 4 cells (values times the valid share, divided by the
smoothed valid share, so that nodata and the raster's edge do not darken the context), then
read back onto the raster's grid by bilinear interpolation, window by window, as the derived
raster is written. The derived raster is float32 with NaN for nodata: the original bands
(exactly, for integer imagery), then per scale every band's context, named
``NAME@ctxSIGMAm``; scales and offsets stay those of the original bands (smoothing is
linear, so the physical values smooth alike). It is kept in
:func:`soilsource.runtime.cache_dir` ``/context`` under a fingerprint of the raster and the
scales: reruns, ``--resume`` and ``predict`` on the same imagery read it again.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject
from rasterio.windows import Window
from scipy import ndimage

from soilsource.atomic import atomic_path
from soilsource.errors import InputError, size_text
from soilsource.inputs.imagery import (
    RasterInfo,
    describe_raster,
    gdal_reason,
    raster_fingerprint,
)
from soilsource.runtime import cache_dir

FORMAT = 1
"""Version of the derived raster's layout; part of its fingerprint."""
CELLS_PER_SIGMA = 4
"""The smoothing's standard deviation in cells of the reduced grid."""
WINDOW_PX = 1024
"""Side of the windows the derived raster is written in."""
_CONTEXT_NAME = re.compile(r".+@ctx(?P<sigma>[0-9.e+-]+)m")


def context_band_names(names: Sequence[str], context_m: Sequence[float]) -> tuple[str, ...]:
    """The bands of the derived raster: ``names``, then each name's context per scale.

    >>> context_band_names(("red", "nir"), [500.0])
    ('red', 'nir', 'red@ctx500m', 'nir@ctx500m')
    """
    return tuple(names) + tuple(f"{n}@ctx{s:g}m" for s in context_m for n in names)


def with_context(
    raster: RasterInfo, context_m: Sequence[float], cache: Path | None = None
) -> RasterInfo:
    """``raster`` with its context bands (module docstring): the cached derived raster,
    written first when it is not there. ``context_m`` empty: ``raster`` itself.

    The result keeps ``raster.path`` (messages and outputs name the user's file) and reads
    its pixels from the derived file (:attr:`~soilsource.inputs.imagery.RasterInfo.pixels`).

    Raises
    ------
    InputError
        The user's raster cannot be read (its pixels are read whole here, first), or the
        cache folder cannot be written (full, or not a folder).
    """
    if not context_m:
        return raster
    path = context_path(raster, context_m, cache)
    folder = path.parent
    if not path.is_file():
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                _write(raster, context_m, tmp)
        except _ReadError as exc:
            raise InputError(raster.path, "", f"cannot read pixels: {exc}") from None
        except (OSError, RasterioError) as exc:
            reason = gdal_reason(exc) if isinstance(exc, RasterioError) else exc.strerror or exc
            raise InputError(
                folder,
                "",
                f"cannot write the context bands ({reason}); free space there or "
                "set SOILSOURCE_CACHE to another folder",
            ) from None
    return replace(describe_raster(path, "patch.context_m"), path=raster.path, pixels=path)


def context_path(raster: RasterInfo, context_m: Sequence[float], cache: Path | None = None) -> Path:
    """Where :func:`with_context` keeps ``raster``'s derived raster (it may not exist yet)."""
    digest = hashlib.sha256(
        repr((FORMAT, raster_fingerprint(raster), [float(s) for s in context_m])).encode()
    ).hexdigest()[:32]
    return (cache or cache_dir()) / "context" / f"{raster.path.stem}-{digest}.tif"


def check_context_space(
    rasters: Sequence[RasterInfo], context_m: Sequence[float], cache: Path | None = None
) -> None:
    """Refuse, before any work, context bands that the cache folder has no room for.

    Each derived raster not cached yet takes at most its pixels x bands x (1 + scales) x
    4 bytes (float32, before compression).

    Raises
    ------
    InputError
        Not enough free space where the derived rasters go (one line: the folder, the
        need, what is free, and the three ways out).
    """
    if not context_m:
        return
    todo = [r for r in rasters if not context_path(r, context_m, cache).is_file()]
    need = sum(r.width * r.height * r.count * (1 + len(context_m)) * 4 for r in todo)
    folder = (cache or cache_dir()) / "context"
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    free = shutil.disk_usage(existing).free
    if need > free:
        raise InputError(
            folder,
            "",
            f"the context bands (patch.context_m) of {len(todo)} raster(s) take up to "
            f"{size_text(need)} here, only {size_text(free)} is free; free some space, set "
            "SOILSOURCE_CACHE to another folder, or set patch.context_m: []",
        )


def smoothed_grid(
    src: rasterio.DatasetReader, sigma_m: float, pixel_m: float
) -> tuple[np.ndarray, rasterio.Affine]:
    """Every band of ``src`` smoothed at ``sigma_m`` on a reduced grid: (bands, h, w)
    float64 in raw units (NaN where no valid pixel is near) and the grid's transform.
    ``pixel_m``: the raster's pixel side in metres
    (:attr:`~soilsource.inputs.imagery.RasterInfo.pixel_size_m`, degrees converted)."""
    factor = max(1, int(sigma_m / pixel_m // CELLS_PER_SIGMA))
    shape = (max(1, -(-src.height // factor)), max(1, -(-src.width // factor)))
    transform = src.transform @ src.transform.scale(src.width / shape[1], src.height / shape[0])
    sigma_cells = sigma_m / (pixel_m * src.width / shape[1])
    out = np.empty((src.count, *shape))
    for b in range(1, src.count + 1):
        values = src.read(b, out_shape=shape, resampling=Resampling.average, masked=True)
        share = (
            src.read_masks(b, out_shape=shape, resampling=Resampling.average).astype(np.float64)
            / 255.0
        )
        share[np.ma.getmaskarray(values)] = 0.0
        weighted = ndimage.gaussian_filter(
            np.ma.filled(values.astype(np.float64), 0.0) * share, sigma_cells, mode="constant"
        )
        norm = ndimage.gaussian_filter(share, sigma_cells, mode="constant")
        with np.errstate(invalid="ignore", divide="ignore"):
            out[b - 1] = np.where(norm > 1e-6, weighted / norm, np.nan)
    return out, transform


class _ReadError(Exception):
    """The user's raster could not be read (GDAL's reason as the message)."""


def _write(raster: RasterInfo, context_m: Sequence[float], path: Path) -> None:
    with rasterio.open(raster.path) as src:
        try:
            grids = [smoothed_grid(src, s, raster.pixel_size_m) for s in context_m]
        except RasterioError as exc:
            raise _ReadError(gdal_reason(exc)) from None
        count = src.count * (1 + len(context_m))
        profile = {
            "driver": "GTiff",
            "width": src.width,
            "height": src.height,
            "count": count,
            "dtype": "float32",
            "crs": src.crs,
            "transform": src.transform,
            "nodata": float("nan"),
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
            "compress": "deflate",
            "zlevel": 1,
            "BIGTIFF": "IF_SAFER",
        }
        names = context_band_names(raster.band_names, context_m)
        with rasterio.open(path, "w", **profile) as dst:
            for b, name in enumerate(names, start=1):
                dst.set_band_description(b, name)
            dst.scales = raster.scales * (1 + len(context_m))
            dst.offsets = raster.offsets * (1 + len(context_m))
            for row in range(0, src.height, WINDOW_PX):
                for col in range(0, src.width, WINDOW_PX):
                    window = Window(
                        col, row, min(WINDOW_PX, src.width - col), min(WINDOW_PX, src.height - row)
                    )
                    dst.write(_window(src, grids, window), window=window)


def _window(src, grids, window: Window) -> np.ndarray:
    """The derived raster's values in ``window``: bands, then each scale's context."""
    try:
        data = src.read(window=window, masked=True)
    except RasterioError as exc:
        raise _ReadError(gdal_reason(exc)) from None
    valid = ~np.ma.getmaskarray(data).any(axis=0)
    parts = [np.where(valid, np.ma.filled(data.astype(np.float32), np.nan), np.nan)]
    transform = rasterio.windows.transform(window, src.transform)
    for grid, grid_transform in grids:
        fine = np.full((src.count, int(window.height), int(window.width)), np.nan, np.float32)
        reproject(
            grid.astype(np.float32),
            fine,
            src_transform=grid_transform,
            src_crs=src.crs,
            dst_transform=transform,
            dst_crs=src.crs,
            src_nodata=np.nan,
            dst_nodata=np.nan,
            resampling=Resampling.bilinear,
        )
        parts.append(np.where(valid, fine, np.nan))
    return np.concatenate(parts).astype(np.float32)


def context_of(record: dict) -> list[float]:
    """The context scales a model was trained with, read from its imagery record's band
    names (``NAME@ctxSIGMAm``): the model file says what it needs, whatever the run's
    configuration (older runs have none).

    >>> context_of({"band_names": ["r", "n", "r@ctx250m", "n@ctx250m", "r@ctx1000m"]})
    [250.0, 1000.0]
    """
    found: list[float] = []
    for name in record["band_names"]:
        match = _CONTEXT_NAME.fullmatch(str(name))
        if match and float(match["sigma"]) not in found:
            found.append(float(match["sigma"]))
    return found


def context_channels(band_names: Sequence[str]) -> tuple[int, ...]:
    """Indices of the context bands among ``band_names``.

    >>> context_channels(("r", "n", "r@ctx250m", "n@ctx250m"))
    (2, 3)
    """
    return tuple(i for i, n in enumerate(band_names) if _CONTEXT_NAME.fullmatch(str(n)))


def imagery_without_context(record: dict) -> dict:
    """A model's imagery record (:func:`~soilsource.inputs.imagery.imagery_record`) as the
    user's imagery must be: the bands before the context bands.

    >>> imagery_without_context({"band_names": ["r", "n", "r@ctx500m", "n@ctx500m"],
    ...     "count": 4, "scales": [1.0] * 4, "offsets": [0.0] * 4})["band_names"]
    ['r', 'n']
    """
    names = [str(n) for n in record["band_names"]]
    count = next((i for i, n in enumerate(names) if _CONTEXT_NAME.fullmatch(n)), len(names))
    if count == len(names):
        return record
    return {
        **record,
        "count": count,
        "band_names": names[:count],
        "scales": list(record["scales"])[:count],
        "offsets": list(record["offsets"])[:count],
    }
