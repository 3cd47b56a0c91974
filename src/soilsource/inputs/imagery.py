"""Imagery: which raster(s) each region reads, and what rasterio says about them.

The ``imagery.path`` of the configuration is one raster (every region reads it),
a list of rasters (scenes or tiles; each sample reads the first one that covers
it) or a ``{region}`` template (one raster per region). Only metadata is read
here; pixels are read in windows by :mod:`soilsource.data.patches`, never whole.

Band names come from the band descriptions (``band_1``, ... when there are none);
nodata, scale and offset are kept per band so that readers can honour them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, cast

import numpy as np
import rasterio
from affine import Affine
from pyproj import CRS, Transformer
from rasterio.errors import RasterioError
from rasterio.windows import Window

from soilsource.config import REGION_PLACEHOLDER, ImageryConfig
from soilsource.errors import InputError

# Mean radius of the earth (IUGG), for the metre size of degrees on geographic grids.
_EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True)
class RasterInfo:
    """Metadata of one raster: grid, CRS, bands. Opening it again is cheap."""

    path: Path
    crs: CRS
    transform: Affine
    width: int
    height: int
    count: int
    dtype: str
    nodata: tuple[float | None, ...]
    scales: tuple[float, ...]
    offsets: tuple[float, ...]
    band_names: tuple[str, ...]
    block_shape: tuple[int, int]
    pixels: Path | None = None
    """The file the pixels are read from when it is not ``path``: a raster derived from the
    user's (:mod:`soilsource.data.context`). ``path`` stays the user's file, for messages,
    output names and reports."""

    @property
    def read_path(self) -> Path:
        """The file to read pixels from."""
        return self.pixels or self.path

    @property
    def res(self) -> tuple[float, float]:
        """Pixel width and height in CRS units (both positive)."""
        return abs(self.transform.a), abs(self.transform.e)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """left, bottom, right, top in the raster's CRS."""
        left, top = self.transform.c, self.transform.f
        right = left + self.transform.a * self.width
        bottom = top + self.transform.e * self.height
        return min(left, right), min(bottom, top), max(left, right), max(bottom, top)

    @property
    def pixel_size_m(self) -> float:
        """Pixel size in metres (the mean of width and height).

        Projected CRSs use their unit (metres, feet, ...). On a geographic grid
        one degree is taken at the raster's central latitude (a documented
        approximation: patches in degrees are not square on the ground).
        """
        res_x, res_y = self.res
        if self.crs.is_geographic:
            lat = math.radians((self.bounds[1] + self.bounds[3]) / 2)
            per_degree = math.pi * _EARTH_RADIUS_M / 180
            return (res_x * per_degree * math.cos(lat) + res_y * per_degree) / 2
        unit = self.crs.axis_info[0].unit_conversion_factor if self.crs.axis_info else 1.0
        return (res_x + res_y) / 2 * unit

    def describe_crs(self) -> str:
        """Short CRS text for summaries, e.g. ``EPSG:28992 (Amersfoort / RD New)``."""
        return describe_crs(self.crs)

    def pixel_of(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fractional (row, col) of points given in the raster's CRS."""
        inv = ~self.transform
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        cols = inv.a * x + inv.b * y + inv.c
        rows = inv.d * x + inv.e * y + inv.f
        return rows, cols

    def contains(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """True where a point (in the raster's CRS) falls on a pixel of the raster."""
        rows, cols = self.pixel_of(x, y)
        return (rows >= 0) & (rows < self.height) & (cols >= 0) & (cols < self.width)

    def window(self) -> Window:
        """The whole raster as a window."""
        return Window(0, 0, self.width, self.height)


def describe_crs(crs: CRS | str | None) -> str:
    """``EPSG:4326 (WGS 84)``, or the CRS name when it has no EPSG code."""
    if crs is None:
        return "no CRS"
    crs = CRS.from_user_input(crs)
    code = crs.to_epsg(min_confidence=70)
    return f"EPSG:{code} ({crs.name})" if code else crs.name


def crs_code(crs: CRS | str) -> str:
    """``EPSG:28992``: the CRS as its authority code, or as WKT when it has none.

    >>> crs_code("EPSG:32649"), crs_code("+proj=utm +zone=49 +datum=WGS84")
    ('EPSG:32649', 'EPSG:32649')
    """
    crs = CRS.from_user_input(crs)
    code = crs.to_epsg(min_confidence=70)
    return f"EPSG:{code}" if code else crs.to_wkt()


def open_raster(path: str | PathLike[str], key: str = "imagery.path") -> rasterio.DatasetReader:
    """Open a raster for reading, or raise :class:`InputError` naming the file.

    Use as a context manager: ``with open_raster(path) as src: ...``.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "", f"file not found (key '{key}')")
    try:
        return rasterio.open(path)
    except RasterioError as exc:
        raise InputError(path, "", f"not a readable raster ({gdal_reason(exc)})") from None


def describe_raster(path: str | PathLike[str], key: str = "imagery.path") -> RasterInfo:
    """Read the metadata of one raster and check that it can serve as a grid.

    Raises
    ------
    InputError
        Missing or unreadable (corrupt) file, no CRS, or a rotated grid.
    """
    path = Path(path)
    with open_raster(path, key) as src:
        if src.crs is None:
            raise InputError(path, "", "has no CRS; assign one (e.g. with gdal_edit.py -a_srs)")
        transform = src.transform
        if transform.b != 0 or transform.d != 0:
            raise InputError(path, "", "rotated grid; warp it to a north-up grid first")
        names = tuple(
            d.strip() if d and d.strip() else f"band_{i + 1}"
            for i, d in enumerate(src.descriptions)
        )
        return RasterInfo(
            path=path,
            crs=CRS.from_user_input(src.crs.to_wkt()),
            transform=transform,
            width=src.width,
            height=src.height,
            count=src.count,
            dtype=src.dtypes[0],
            nodata=tuple(src.nodatavals),
            scales=tuple(float(s) if s is not None else 1.0 for s in src.scales),
            offsets=tuple(float(o) if o is not None else 0.0 for o in src.offsets),
            band_names=names,
            block_shape=tuple(src.block_shapes[0]),
        )


def raster_fingerprint(raster: RasterInfo) -> str:
    """A hex digest naming a raster's grid, bands and contents, for caches keyed by imagery.

    The contents enter by the file's size and 16 blocks of 64 KiB spread over it (hashing
    whole multi-gigabyte scenes would cost more than what is cached); an edited scene
    changes its size or, almost surely, one of the sampled blocks.
    """
    digest = hashlib.sha256()
    size = raster.path.stat().st_size
    meta = (
        raster.width,
        raster.height,
        raster.count,
        raster.dtype,
        tuple(raster.transform),
        raster.crs.to_wkt(),
        raster.band_names,
        raster.scales,
        raster.offsets,
        size,
    )
    digest.update(repr(meta).encode())
    with open(raster.path, "rb") as fh:
        for start in np.linspace(0, max(0, size - 65536), 16).astype(np.int64):
            fh.seek(int(start))
            digest.update(fh.read(65536))
    return digest.hexdigest()


def prediction_points(raster: RasterInfo, n: int = 1000) -> np.ndarray:
    """About ``n`` regularly spaced points (x, y in the raster's CRS) on its valid pixels.

    The prediction area of kNNDM cross-validation (:class:`soilsource.learn.folds.KNNDM`): the
    places the probability map covers. The raster's validity mask is read once at a
    reduced resolution (a grid of about ``4 n`` cells, GDAL's nearest-neighbour
    overview), and the centres of valid cells are thinned regularly to about ``n``.
    """
    side = max(1.0, math.sqrt(raster.width * raster.height / (4 * n)))
    rows, cols = max(1, round(raster.height / side)), max(1, round(raster.width / side))
    with open_raster(raster.path) as src:
        valid = src.dataset_mask(out_shape=(rows, cols)) > 0
    r, c = np.nonzero(valid)
    step = max(1, len(r) // n)
    rc, cc = r[::step] + 0.5, c[::step] + 0.5
    # affine's types say a point of two floats; it maps arrays of points just as well
    x, y = raster.transform @ (cc * raster.width / cols, rc * raster.height / rows)  # type: ignore[operator]
    return np.column_stack([x, y]).astype(np.float64)


def region_path(template: str | PathLike[str], region: str) -> Path:
    """The file of ``region`` under a ``{region}`` template (no check that it exists).

    >>> region_path("imagery/{region}.tif", "north").as_posix()
    'imagery/north.tif'
    """
    return Path(str(template).replace(REGION_PLACEHOLDER, region))


def resolve_imagery(spec: ImageryConfig, regions: Sequence[str]) -> dict[str, list[RasterInfo]]:
    """The rasters each region reads, opened once each.

    A template needs a readable file for every region; a list must agree in band
    count so that every patch has the same channels.

    Raises
    ------
    InputError
        A missing or unreadable file, a region without a file, or rasters whose
        bands do not match.
    """
    if spec.is_template:
        out = {}
        for region in regions:
            path = region_path(cast(Path, spec.path), region)  # a template is one path
            if not path.exists():
                raise InputError(
                    path, "", f"no raster for region '{region}' (template key 'imagery.path')"
                )
            out[region] = [describe_raster(path)]
        _check_same_bands([r[0] for r in out.values()])
        return out
    rasters = [describe_raster(p) for p in spec.paths]
    _check_same_bands(rasters)
    return {region: rasters for region in regions}


def assign_rasters(
    x: np.ndarray, y: np.ndarray, crs: CRS | str, rasters: Sequence[RasterInfo]
) -> np.ndarray:
    """Index of the first raster that covers each point, -1 where none does.

    ``x``, ``y`` are in ``crs``; they are reprojected into each raster's CRS.
    """
    index = np.full(np.shape(x), -1, dtype=np.int64)
    source = CRS.from_user_input(crs)
    for i, raster in enumerate(rasters):
        rx, ry = reproject_points(x, y, source, raster.crs)
        inside = raster.contains(rx, ry) & (index < 0)
        index[inside] = i
    return index


def reproject_points(
    x: np.ndarray, y: np.ndarray, source: CRS | str, target: CRS | str
) -> tuple[np.ndarray, np.ndarray]:
    """Points from ``source`` to ``target`` CRS (x = easting / longitude, always)."""
    source, target = CRS.from_user_input(source), CRS.from_user_input(target)
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if source == target:
        return x, y
    transformer = Transformer.from_crs(source, target, always_xy=True)
    with np.errstate(all="ignore"):
        tx, ty = transformer.transform(x, y, errcheck=False)
    return np.asarray(tx, dtype=float), np.asarray(ty, dtype=float)


def same_grid(a: Any, b: Any) -> bool:
    """True when two rasters lie on one grid: the one rule for "same grid" in soilsource.

    ``a`` and ``b`` are anything with ``width``, ``height``, ``transform`` and ``crs``
    (open rasterio datasets, :class:`RasterInfo`). Same size in pixels, transforms equal to
    1e-6 (a GeoTIFF stores them as doubles: rounding in a round trip through another tool
    is ~1e-9 m, a real shift is at least a fraction of a pixel), and the same CRS where both
    name one (a file without a CRS is taken to be on the other's).

    >>> from types import SimpleNamespace
    >>> from affine import Affine
    >>> grid = dict(width=4, height=3, crs=None)
    >>> a = SimpleNamespace(**grid, transform=Affine(10, 0, 500000, 0, -10, 2e6))
    >>> b = SimpleNamespace(**grid, transform=Affine(10, 0, 500000 + 1e-9, 0, -10, 2e6))
    >>> c = SimpleNamespace(**grid, transform=Affine(10, 0, 500005, 0, -10, 2e6))
    >>> same_grid(a, b), same_grid(a, c)
    (True, False)
    """
    return (
        (a.width, a.height) == (b.width, b.height)
        and a.transform.almost_equals(b.transform, precision=1e-6)
        and (a.crs is None or b.crs is None or a.crs == b.crs)
    )


PIXEL_TOLERANCE = 0.01
"""Relative difference of pixel size that :func:`check_like_training` accepts (1 %)."""


def imagery_record(raster: RasterInfo) -> dict[str, Any]:
    """What a model needs its imagery to be, as plain JSON (saved in the model file).

    Band names and order, count, each band's scale and offset (the reader turns values
    into physical units with them), and the pixel size (a patch is a fixed number of
    pixels). The CRS and data type are recorded for information; they may differ.
    """
    return {
        "band_names": list(raster.band_names),
        "count": raster.count,
        "scales": list(raster.scales),
        "offsets": list(raster.offsets),
        "pixel_size_m": raster.pixel_size_m,
        "crs": describe_crs(raster.crs),
        "dtype": raster.dtype,
    }


def scaling_mismatch(
    raster: RasterInfo, scales: Sequence[float], offsets: Sequence[float]
) -> tuple[int, str, float, float] | None:
    """The first band whose scale or offset differs from ``scales``/``offsets``, as
    ``(band index, "scale" or "offset", the raster's, the other)``; None when all agree.

    One rule for "the values mean the same" (to 1e-9 relative, 1e-12 absolute: a float32
    round trip of 0.0001 stays inside it, another scale does not), between the rasters of
    one run and between new imagery and a model's training imagery.
    """
    for what, got, want in (("scale", raster.scales, scales), ("offset", raster.offsets, offsets)):
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            if not math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12):
                return i, what, float(a), float(b)
    return None


def check_like_training(raster: RasterInfo, record: dict[str, Any]) -> None:
    """Refuse imagery whose bands or pixel size differ from what a model was trained on.

    ``record`` is :func:`imagery_record` of the training imagery. Checked in this order:
    band count, each band's name (in order), scale and offset, then the pixel size
    (within :data:`PIXEL_TOLERANCE`).

    Raises
    ------
    InputError
        One line naming the band or property that differs, and what the model expects.
    """
    names = list(record["band_names"])
    if raster.count != record["count"]:
        raise InputError(
            raster.path,
            "",
            f"{raster.count} bands, but the model was trained on {record['count']} "
            f"({', '.join(names)})",
        )
    for i, (name, expected) in enumerate(zip(raster.band_names, names, strict=True)):
        if name != expected:
            hint = ""
            if name in names:
                hint = f"; '{name}' is band {names.index(name) + 1} in training: reorder the bands"
            elif name == f"band_{i + 1}":
                hint = " (the file names no bands): set its band descriptions"
            raise InputError(
                raster.path,
                f"band {i + 1}",
                f"is '{name}', but the model was trained with '{expected}' there{hint}",
            )
    differs = scaling_mismatch(raster, record["scales"], record["offsets"])
    if differs is not None:
        i, what, a, b = differs
        raise InputError(
            raster.path,
            f"band {i + 1} ('{names[i]}')",
            f"{what} {a:g}, but the training imagery had {what} {b:g}; the values "
            "would not mean the same",
        )
    size, trained = raster.pixel_size_m, float(record["pixel_size_m"])
    if abs(size - trained) > PIXEL_TOLERANCE * trained:
        raise InputError(
            raster.path,
            "pixel size",
            f"{size:g} m, but the model was trained on {trained:g} m pixels (its patches are "
            f"a fixed number of pixels); resample the imagery to {trained:g} m",
        )


def _check_same_bands(rasters: Sequence[RasterInfo]) -> None:
    first = rasters[0]
    for other in rasters[1:]:
        if other.count != first.count:
            raise InputError(
                other.path,
                "",
                f"{other.count} bands, but {first.path.name} has {first.count}: "
                "every imagery raster needs the same bands",
            )


def gdal_reason(exc: BaseException) -> str:
    """The first line of the innermost error (rasterio wraps GDAL's own message)."""
    while (inner := exc.__cause__ or exc.__context__) is not None:
        exc = inner
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
