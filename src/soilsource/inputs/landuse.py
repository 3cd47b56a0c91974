"""Land use on the imagery grid: a raster of integer codes or vector polygons.

A land-use raster is resampled (nearest neighbour) onto the imagery grid; vector
polygons are rasterised with their class ``field``. Both happen one window at a
time, so land use of any size works in bounded memory. The class table is a CSV
with columns ``code,name``; a vector field of names is mapped to codes through
it (or, without a table, to codes 1, 2, ... in sorted name order).

Code 0 is "no land use" (outside the map) in every array this module returns.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
from rasterio import features, windows
from rasterio.enums import Resampling
from rasterio.errors import RasterioError, WindowError
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window

from soilsource.config import LanduseConfig, is_csv
from soilsource.errors import InputError, format_rows
from soilsource.inputs.imagery import (
    RasterInfo,
    describe_crs,
    describe_raster,
    open_raster,
    region_path,
)

NO_CLASS = 0
VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".sqlite")


@dataclass
class Landuse:
    """One region's land-use source, ready to be put on the imagery grid window by window."""

    path: Path
    classes: dict[int, str]
    kind: str  # "raster" or "vector"
    crs: str
    band: int = 1
    field: str | None = None
    nodata: float | None = None
    _polygons: gpd.GeoDataFrame | None = dataclasses.field(default=None, repr=False)

    def on_grid(self, grid: RasterInfo, window: Window | None = None) -> np.ndarray:
        """Land-use codes (int32, 0 = none) for ``window`` of the imagery ``grid``."""
        window = window or grid.window()
        transform = windows.transform(window, grid.transform)
        shape = (int(window.height), int(window.width))
        if self.kind == "vector":
            return self._rasterise(grid, transform, shape)
        return self._resample(grid, transform, shape)

    def _resample(self, grid: RasterInfo, transform, shape) -> np.ndarray:
        with open_raster(self.path, "landuse.path") as src:
            try:
                aligned = _aligned_window(src, grid, transform, shape)
                if aligned is not None:  # same grid: a plain (boundless) windowed read
                    fill = self.nodata if self.nodata is not None else NO_CLASS
                    data = src.read(self.band, window=aligned, boundless=True, fill_value=fill)
                    return self._codes(data)
                out = np.zeros(shape, dtype=np.int32)
                source_window = _source_window(src, grid, transform, shape)
                if source_window is None:
                    return out
                reproject(
                    source=src.read(self.band, window=source_window).astype(np.int32),
                    destination=out,
                    src_transform=src.window_transform(source_window),
                    src_crs=src.crs,
                    src_nodata=self.nodata,
                    dst_transform=transform,
                    dst_crs=grid.crs,
                    dst_nodata=NO_CLASS,
                    resampling=Resampling.nearest,
                )
            except RasterioError as exc:
                raise InputError(self.path, "", f"cannot read: {exc}") from None
        return out

    def _codes(self, data: np.ndarray) -> np.ndarray:
        codes = data.astype(np.int32)
        if self.nodata is not None:
            codes[data == self.nodata] = NO_CLASS
        return codes

    def _rasterise(self, grid: RasterInfo, transform, shape) -> np.ndarray:
        polygons = self.polygons().to_crs(grid.crs)
        shapes = (
            (geom, code)
            for geom, code in zip(polygons.geometry, polygons["_code"], strict=True)
            if geom is not None and not geom.is_empty
        )
        return features.rasterize(
            shapes, out_shape=shape, transform=transform, fill=NO_CLASS, dtype="int32"
        )

    def polygons(self) -> gpd.GeoDataFrame:
        """The vector land use with an integer ``_code`` column (read once)."""
        if self._polygons is None:
            self._polygons = _read_polygons(self.path, self.field, self.classes)
        return self._polygons

    def codes_present(self) -> set[int]:
        """Every class code in the source (raster: scanned block by block)."""
        if self.kind == "vector":
            return {int(c) for c in self.polygons()["_code"].unique()}
        found: set[int] = set()
        with open_raster(self.path, "landuse.path") as src:
            try:
                for _, window in src.block_windows(self.band):
                    found.update(
                        np.unique(self._codes(src.read(self.band, window=window))).tolist()
                    )
            except RasterioError as exc:
                raise InputError(self.path, "", f"cannot read: {exc}") from None
        found.discard(NO_CLASS)
        return found


def read_classes(path: str | PathLike[str]) -> dict[int, str]:
    """The ``code,name`` class table as ``{code: name}``.

    >>> import tempfile
    >>> table = Path(tempfile.mkdtemp()) / "classes.csv"
    >>> _ = table.write_text("code,name\\n1,industrial\\n2,paddy\\n")
    >>> read_classes(table)
    {1: 'industrial', 2: 'paddy'}
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "", "file not found (key 'landuse.classes')")
    try:
        table = pd.read_csv(path, dtype=str, skipinitialspace=True)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(path, "", f"cannot read as a table: {exc}") from None
    table.columns = [str(c).strip().lower() for c in table.columns]
    for column in ("code", "name"):
        if column not in table.columns:
            raise InputError(path, f"column '{column}'", "not found (a class table has code,name)")
    codes = pd.to_numeric(table["code"], errors="coerce")
    bad = codes.isna() | (codes != codes.round()) | (codes <= NO_CLASS)
    if bad.any():
        rows = (np.flatnonzero(bad.to_numpy()) + 1).tolist()
        raise InputError(path, "column 'code'", f"{format_rows(rows)}: not a positive integer")
    if codes.duplicated().any():
        rows = (np.flatnonzero(codes.duplicated(keep=False).to_numpy()) + 1).tolist()
        raise InputError(path, "column 'code'", f"{format_rows(rows)}: duplicate code")
    names = table["name"].fillna("").str.strip()
    return dict(zip(codes.astype(int).tolist(), names.tolist(), strict=True))


def open_landuse(spec: LanduseConfig, region: str) -> Landuse:
    """The land-use source of one region (a ``{region}`` template picks its file).

    Raises
    ------
    InputError
        A missing or unreadable file or class table, a vector file without its
        ``field``, or codes that are missing from the class table.
    """
    path = region_path(spec.path, region) if spec.is_template else Path(spec.path)
    if not path.exists():
        what = f"no land-use file for region '{region}'" if spec.is_template else "file not found"
        raise InputError(path, "", f"{what} (key 'landuse.path')")
    classes = read_classes(spec.classes) if spec.classes is not None else {}
    if _is_vector(path):
        if spec.field is None:
            raise InputError(path, "key 'landuse.field'", "a vector land use needs its class field")
        landuse = Landuse(path, classes, "vector", "", field=spec.field)
        polygons = landuse.polygons()
        landuse.crs = describe_crs(polygons.crs)
        if not classes:  # names given in the field, no table: number them
            landuse.classes = polygons.attrs["classes"]
    else:
        info = describe_raster(path, key="landuse.path")
        if spec.band > info.count:
            raise InputError(path, "key 'landuse.band'", f"band {spec.band} of {info.count}")
        dtype = np.dtype(info.dtype)
        if not np.issubdtype(dtype, np.integer):
            raise InputError(path, "", f"land-use codes must be integers, not {info.dtype}")
        landuse = Landuse(
            path,
            classes,
            "raster",
            info.describe_crs(),
            band=spec.band,
            nodata=info.nodata[spec.band - 1],
        )
    if spec.classes is not None:
        missing = sorted(landuse.codes_present() - set(classes))
        if missing:
            shown = ", ".join(str(c) for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
            raise InputError(
                path,
                f"code{'s' if len(missing) > 1 else ''} {shown}",
                f"not in the class table {Path(spec.classes).name}",
            )
    return landuse


def iter_windows(grid: RasterInfo, size: int = 1024) -> Iterator[Window]:
    """Square windows of about ``size`` pixels covering ``grid``, row by row.

    >>> from affine import Affine
    >>> from pyproj import CRS
    >>> grid = RasterInfo(Path("x.tif"), CRS.from_epsg(3857), Affine.identity(), 5, 3, 1,
    ...                   "uint8", (None,), (1.0,), (0.0,), ("b",), (3, 5))
    >>> [tuple(map(int, w.flatten())) for w in iter_windows(grid, 4)]
    [(0, 0, 4, 3), (4, 0, 1, 3)]
    """
    for row in range(0, grid.height, size):
        for col in range(0, grid.width, size):
            yield Window(col, row, min(size, grid.width - col), min(size, grid.height - row))


def _is_vector(path: Path) -> bool:
    return path.suffix.lower() in VECTOR_SUFFIXES or is_csv(path)


def _read_polygons(path: Path, field_name: str | None, classes: dict[int, str]) -> gpd.GeoDataFrame:
    try:
        polygons = gpd.read_file(path, engine="pyogrio")
    except Exception as exc:  # pyogrio/GDAL errors
        raise InputError(path, "", f"cannot read: {str(exc).splitlines()[0]}") from None
    if polygons.crs is None:
        raise InputError(path, "", "has no CRS")
    if field_name not in polygons.columns:
        shown = ", ".join(c for c in polygons.columns if c != "geometry")
        raise InputError(path, f"field '{field_name}'", f"not found (fields: {shown})")
    values = polygons[field_name]
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all() and (numeric == numeric.round()).all():
        polygons["_code"] = numeric.astype(np.int32)
        polygons.attrs["classes"] = {int(c): str(int(c)) for c in numeric.unique()}
        return polygons
    names = values.astype(str).str.strip()
    if classes:
        by_name = {name: code for code, name in classes.items()}
        unknown = sorted(set(names) - set(by_name))
        if unknown:
            raise InputError(
                path, f"field '{field_name}'", f"classes {unknown[:5]} not in the class table"
            )
        polygons["_code"] = names.map(by_name).astype(np.int32)
    else:
        numbered = {name: i + 1 for i, name in enumerate(sorted(set(names)))}
        polygons["_code"] = names.map(numbered).astype(np.int32)
        polygons.attrs["classes"] = {code: name for name, code in numbered.items()}
    return polygons


def _aligned_window(src, grid: RasterInfo, transform, shape) -> Window | None:
    """The land-use window that matches an imagery window pixel for pixel, if the grids agree."""
    if src.crs != grid.crs:
        return None
    a, e = src.transform.a, src.transform.e
    if not np.allclose((a, e), (transform.a, transform.e), rtol=1e-9):
        return None
    col, row = ~src.transform @ (transform.c, transform.f)
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return Window(round(col), round(row), shape[1], shape[0])


def _source_window(src, grid: RasterInfo, transform, shape) -> Window | None:
    """The part of the land-use raster that covers a window of the imagery grid (+1 px)."""
    height, width = shape
    left, top = transform @ (0, 0)
    right, bottom = transform @ (width, height)
    bounds = transform_bounds(
        grid.crs, src.crs, min(left, right), min(top, bottom), max(left, right), max(top, bottom)
    )
    window = windows.from_bounds(*bounds, transform=src.transform)
    col0, row0 = math.floor(window.col_off) - 1, math.floor(window.row_off) - 1
    col1 = math.ceil(window.col_off + window.width) + 1
    row1 = math.ceil(window.row_off + window.height) + 1
    padded = Window(col0, row0, col1 - col0, row1 - row0)
    try:
        return padded.intersection(Window(0, 0, src.width, src.height))
    except WindowError:  # no overlap
        return None
