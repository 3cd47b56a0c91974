"""Hotspots: the most sensitive places of a region, as polygons (candidate pollution sources).

Definition (a choice, documented here once and used by :mod:`soilsource.analysis.zones` too):

- a pixel is *hot* when its sensitivity is among the top ``top_share`` (default 5 %) of the
  covered (non-nodata) pixels of the region **and** strictly positive. Only positive values
  count because a positive sensitivity means that hiding the place lowers the predicted
  probability of contamination, i.e. the network reads it as evidence *for* a source; the
  threshold is the k-th largest covered value with ``k = ceil(top_share * n_covered)``, so
  ties at the threshold are all hot (the share can exceed ``top_share`` slightly);
- hot pixels are joined into polygons by 4-connectivity (pixels sharing an edge, as
  :func:`rasterio.features.shapes` does by default); a polygon of fewer than
  ``min_pixels`` (default 4) pixels is dropped: occlusion works in windows of many pixels,
  so a speck of one to three pixels is threshold noise, not a place;
- each polygon carries its area, mean and maximum sensitivity, and its dominant land-use
  class (``landuse``) with that class's share of the polygon's pixels (``landuse_share``).

Everything is computed tile by tile: the threshold by an exact two-pass radix selection
over the float32 values, the polygons per tile in pixel coordinates (integers, so pieces
cut by tile edges join exactly) and then moved to map coordinates.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import shapes
from rasterio.windows import Window, subdivide
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from soilsource.errors import InputError
from soilsource.gisout import layer_style_qml, write_features
from soilsource.inputs.imagery import describe_raster, open_raster, same_grid
from soilsource.inputs.landuse import Landuse
from soilsource.progress import track

DEFAULT_TOP_SHARE = 0.05
DEFAULT_MIN_PIXELS = 4
TILE_PX = 1024
LAYER = "hotspots"
HOTSPOT_OUTLINE = "#ffe14d"
"""Outline colour of hotspots, in the report and in the layer's QGIS style."""
UNKNOWN_CLASS = np.iinfo(np.int64).min
"""Land-use code given to pixels that are nodata in the land-use raster."""

COLUMNS = [
    "region",
    "hotspot_id",
    "area_m2",
    "n_pixels",
    "mean_sensitivity",
    "max_sensitivity",
    "landuse",
    "landuse_share",
    "rank",
    "x",
    "y",
]

Reader = Callable[[Window], tuple[np.ndarray, np.ndarray | None]]
"""Reads sensitivity (float32, NaN nodata) and land-use codes (or None) of one window."""


# --- threshold -----------------------------------------------------------------------------


def _top_count(n_covered: int, top_share: float) -> int:
    if not 0.0 < top_share <= 1.0:
        raise ValueError(f"top_share must be in (0, 1], got {top_share}")
    return math.ceil(top_share * n_covered - 1e-9)


def hotspot_threshold(sensitivity: np.ndarray, top_share: float = DEFAULT_TOP_SHARE) -> float:
    """Sensitivity of the k-th most sensitive covered pixel, ``k = ceil(top_share * n)``.

    NaN pixels are not covered. Returns ``inf`` when nothing is covered.

    >>> hotspot_threshold(np.array([0.1, 0.5, np.nan, 0.3, 0.2]), top_share=0.5)
    0.3
    """
    values = np.asarray(sensitivity, dtype=np.float64)
    values = values[np.isfinite(values)]
    k = _top_count(values.size, top_share)
    if k == 0:
        return math.inf
    return float(np.partition(values, values.size - k)[values.size - k])


def hotspot_mask(sensitivity: np.ndarray, threshold: float) -> np.ndarray:
    """Hot pixels: at or above ``threshold`` and strictly positive (NaN is never hot).

    >>> hotspot_mask(np.array([-1.0, 0.0, 0.2, 0.5, np.nan]), threshold=-2.0)
    array([False, False,  True,  True, False])
    """
    s = np.asarray(sensitivity)
    with np.errstate(invalid="ignore"):
        return (s >= threshold) & (s > 0)


def _sort_keys(values: np.ndarray) -> np.ndarray:
    """uint32 keys that sort like the float32 values (IEEE 754 sign-magnitude to unsigned)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    return np.where(bits >> 31, ~bits, bits | np.uint32(0x80000000))


def _key_value(key: int) -> float:
    bits = key ^ 0x80000000 if key >> 31 else ~key & 0xFFFFFFFF
    return float(np.array([bits], dtype=np.uint32).view(np.float32)[0])


def _kth_largest_bucket(histogram: np.ndarray, k: int) -> tuple[int, int]:
    """Bucket holding the k-th largest value, and that value's rank within the bucket."""
    from_top = np.cumsum(histogram[::-1])
    bucket = histogram.size - 1 - int(np.searchsorted(from_top, k))
    above = int(from_top[histogram.size - 2 - bucket]) if bucket < histogram.size - 1 else 0
    return bucket, k - above


def raster_hotspot_threshold(
    path: str | os.PathLike[str], top_share: float = DEFAULT_TOP_SHARE, tile_px: int = TILE_PX
) -> float:
    """:func:`hotspot_threshold` of a sensitivity raster, read tile by tile, exactly.

    Two passes of 65,536-bucket histograms over order-preserving integer keys of the
    float32 values (the high 16 bits, then the low 16 bits inside the one bucket that holds
    the answer): exact, with memory independent of the raster size.
    """
    with rasterio.open(path) as src:
        windows = list(subdivide(Window(0, 0, src.width, src.height), tile_px, tile_px))

        def keys() -> Iterator[np.ndarray]:
            for window in windows:
                block = src.read(1, window=window, masked=True).filled(np.nan)
                yield _sort_keys(block[np.isfinite(block)])

        high = np.zeros(1 << 16, dtype=np.int64)
        for k in keys():
            high += np.bincount(k >> 16, minlength=1 << 16)
        n_top = _top_count(int(high.sum()), top_share)
        if n_top == 0:
            return math.inf
        bucket, rank = _kth_largest_bucket(high, n_top)
        low = np.zeros(1 << 16, dtype=np.int64)
        for k in keys():
            low += np.bincount(k[(k >> 16) == bucket] & 0xFFFF, minlength=1 << 16)
        low_bucket, _ = _kth_largest_bucket(low, rank)
    return _key_value((bucket << 16) | low_bucket)


# --- polygons ------------------------------------------------------------------------------


@dataclass
class _Pieces:
    """Connected hot components found tile by tile, before those cut by tiles are joined."""

    geometries: list[shapely.Geometry] = field(default_factory=list)
    n_pixels: list[int] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    maximum: list[float] = field(default_factory=list)
    classes: list[dict[int, int]] = field(default_factory=list)
    on_tile_edge: list[bool] = field(default_factory=list)

    def add_tile(
        self,
        window: Window,
        sensitivity: np.ndarray,
        landuse: np.ndarray | None,
        threshold: float,
        grid_shape: tuple[int, int],
    ) -> None:
        hot = hotspot_mask(sensitivity, threshold)
        if not hot.any():
            return
        labels, n = ndimage.label(hot)  # default structure: 4-connectivity
        label, value = labels[hot], sensitivity[hot].astype(np.float64)
        self.n_pixels += np.bincount(label, minlength=n + 1)[1:].tolist()
        self.total += np.bincount(label, value, minlength=n + 1)[1:].tolist()
        maximum = np.full(n + 1, -np.inf)
        np.maximum.at(maximum, label, value)
        self.maximum += maximum[1:].tolist()
        self.classes += _class_counts(label, None if landuse is None else landuse[hot], n)
        row_off, col_off = int(window.row_off), int(window.col_off)
        height, width = hot.shape
        for sl in ndimage.find_objects(labels):
            rows, cols = sl
            self.on_tile_edge.append(
                (rows.start == 0 and row_off > 0)
                or (cols.start == 0 and col_off > 0)
                or (rows.stop == height and row_off + height < grid_shape[0])
                or (cols.stop == width and col_off + width < grid_shape[1])
            )
        # Pixel coordinates (x = column, y = row) are integers: pieces join exactly.
        polygons = [None] * n
        offset = Affine.translation(col_off, row_off)
        for geom, value in shapes(labels.astype(np.int32), mask=hot, transform=offset):
            polygons[int(value) - 1] = shapely.geometry.shape(geom)
        self.geometries += polygons

    def joined(self) -> pd.DataFrame:
        """One row per connected component of the whole grid."""
        n = len(self.geometries)
        group = np.arange(n)
        edge = np.flatnonzero(self.on_tile_edge)
        if edge.size > 1:
            geoms = np.array(self.geometries, dtype=object)[edge]
            a, b = shapely.STRtree(geoms).query(geoms, predicate="intersects")
            keep = a < b
            a, b = a[keep], b[keep]
            # 4-connectivity: pieces join when they share an edge, not only a corner.
            shares_edge = shapely.length(shapely.intersection(geoms[a], geoms[b])) > 0
            a, b = edge[a[shares_edge]], edge[b[shares_edge]]
            graph = coo_matrix((np.ones(a.size), (a, b)), shape=(n, n))
            _, group = connected_components(graph, directed=False)
        _, group = np.unique(group, return_inverse=True)
        n_groups = int(group.max()) + 1 if n else 0
        n_pixels = np.bincount(group, self.n_pixels, minlength=n_groups).astype(np.int64)
        total = np.bincount(group, self.total, minlength=n_groups)
        maximum = np.full(n_groups, -np.inf)
        np.maximum.at(maximum, group, self.maximum)
        members: list[list[int]] = [[] for _ in range(n_groups)]
        for i, g in enumerate(group.tolist()):
            members[g].append(i)
        classes, geometries = [], []
        for parts in members:
            counts: dict[int, int] = {}
            for i in parts:
                for code, c in self.classes[i].items():
                    counts[code] = counts.get(code, 0) + c
            classes.append(counts)
            geometries.append(
                self.geometries[parts[0]]
                if len(parts) == 1
                else shapely.union_all([self.geometries[i] for i in parts])
            )
        return pd.DataFrame(
            {
                "n_pixels": n_pixels,
                "total": total,
                "maximum": maximum,
                "classes": classes,
                "geometry": geometries,
            }
        )


def _class_counts(label: np.ndarray, codes: np.ndarray | None, n: int) -> list[dict[int, int]]:
    """Pixels of each land-use code in each labelled component (labels 1..n)."""
    counts: list[dict[int, int]] = [{} for _ in range(n)]
    if codes is None:
        return counts
    distinct, code_index = np.unique(codes.astype(np.int64), return_inverse=True)
    pair = (label - 1) * distinct.size + code_index
    number = np.bincount(pair, minlength=n * distinct.size).reshape(n, distinct.size)
    for i, j in zip(*np.nonzero(number), strict=True):
        counts[i][int(distinct[j])] = int(number[i, j])
    return counts


def _polygons(
    read: Reader,
    height: int,
    width: int,
    *,
    transform: Affine,
    crs: CRS | str | None,
    threshold: float,
    classes: Mapping[int, str] | None,
    region: str,
    min_pixels: int,
    tile_px: int,
) -> gpd.GeoDataFrame:
    if min_pixels < 1:
        raise ValueError(f"min_pixels must be at least 1, got {min_pixels}")
    pieces = _Pieces()
    tiles = subdivide(Window(0, 0, width, height), tile_px, tile_px)
    for window in track(tiles, f"hotspots {region}".rstrip()):
        sensitivity, landuse = read(window)
        pieces.add_tile(window, sensitivity, landuse, threshold, (height, width))
    joined = pieces.joined()
    joined = joined[joined.n_pixels >= min_pixels]
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
    names = dict(classes or {})
    dominant: list[str | None] = []
    share: list[float] = []
    for counts, n_pixels in zip(joined.classes, joined.n_pixels, strict=True):
        known = {code: c for code, c in counts.items() if code in names}
        if not known:
            dominant.append(None)
            share.append(np.nan)
            continue
        code = min(known, key=lambda k: (-known[k], k))  # most pixels; ties: lowest code
        dominant.append(names[code])
        share.append(known[code] / n_pixels)
    matrix = [transform.a, transform.b, transform.d, transform.e, transform.c, transform.f]
    frame = gpd.GeoDataFrame(
        {
            "region": region,
            "area_m2": joined.n_pixels.to_numpy(dtype=float) * pixel_area,
            "n_pixels": joined.n_pixels.to_numpy(dtype=np.int64),
            "mean_sensitivity": (joined.total / joined.n_pixels).to_numpy(dtype=float),
            "max_sensitivity": joined.maximum.to_numpy(dtype=float),
            "landuse": pd.Series(dominant, dtype=object),
            "landuse_share": np.asarray(share, dtype=float),
        },
        geometry=gpd.GeoSeries(
            [shapely.affinity.affine_transform(g, matrix) for g in joined.geometry], crs=crs
        ),
        crs=crs,
    )
    frame = frame.sort_values(["mean_sensitivity", "area_m2"], ascending=False, ignore_index=True)
    frame.insert(1, "hotspot_id", np.arange(1, len(frame) + 1, dtype=np.int64))
    frame["rank"] = frame["hotspot_id"]  # 1 = strongest, the name candidates.gpkg uses too
    centroids = frame.geometry.centroid
    frame["x"], frame["y"] = centroids.x.to_numpy(), centroids.y.to_numpy()
    return frame[[*COLUMNS, "geometry"]]


def hotspot_polygons(
    sensitivity: np.ndarray,
    landuse: np.ndarray | None = None,
    classes: Mapping[int, str] | None = None,
    *,
    transform: Affine,
    crs: CRS | str | None,
    region: str = "",
    top_share: float = DEFAULT_TOP_SHARE,
    threshold: float | None = None,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    tile_px: int = TILE_PX,
) -> gpd.GeoDataFrame:
    """Hotspot polygons of one region from in-memory arrays on the imagery grid.

    Parameters
    ----------
    sensitivity:
        (H, W) sensitivity mosaic, NaN where no patch covers.
    landuse, classes:
        (H, W) land-use codes on the same grid and the class table ``{code: name}``;
        codes not in the table count as unknown. Without them ``landuse`` is empty.
    transform, crs:
        The grid, for map coordinates and areas.
    top_share, threshold:
        Hot share of the covered area, or a threshold computed elsewhere (then
        ``top_share`` is not used).
    min_pixels:
        Smallest polygon kept, in pixels.

    Returns
    -------
    GeoDataFrame with columns region, hotspot_id (1 = highest mean sensitivity), area_m2,
    n_pixels, mean_sensitivity, max_sensitivity, landuse, landuse_share, rank (the same
    as hotspot_id), x, y (the polygon's centroid, in ``crs``) and geometry.
    """
    sensitivity = np.asarray(sensitivity, dtype=np.float32)
    if landuse is not None and np.shape(landuse) != sensitivity.shape:
        raise ValueError(f"landuse {np.shape(landuse)} and sensitivity {sensitivity.shape} differ")
    if threshold is None:
        threshold = hotspot_threshold(sensitivity, top_share)

    def read(w: Window) -> tuple[np.ndarray, np.ndarray | None]:
        rows, cols = w.toslices()
        return sensitivity[rows, cols], None if landuse is None else landuse[rows, cols]

    return _polygons(
        read,
        *sensitivity.shape,
        transform=transform,
        crs=crs,
        threshold=threshold,
        classes=classes,
        region=region,
        min_pixels=min_pixels,
        tile_px=tile_px,
    )


# --- files ---------------------------------------------------------------------------------


LanduseSource = str | os.PathLike[str] | Landuse
"""A land-use raster already on the imagery grid, or a :class:`~soilsource.inputs.landuse.Landuse`
(any raster or vector land use, put on the grid window by window)."""


class RegionRasters:
    """A region's sensitivity raster and, optionally, its land use, read window by window.

    Land use is either a raster file on the sensitivity (imagery) grid, checked here, or a
    :class:`~soilsource.inputs.landuse.Landuse` from :func:`~soilsource.inputs.landuse.
    open_landuse`, which resamples or rasterises it onto the grid. Land-use nodata (code 0
    of a ``Landuse``) is a code outside every class table: unknown.
    """

    def __init__(
        self,
        sensitivity_path: str | os.PathLike[str],
        landuse: LanduseSource | None = None,
        *,
        landuse_band: int = 1,
    ) -> None:
        self._stack = ExitStack()
        try:
            self.sensitivity = self._stack.enter_context(rasterio.open(sensitivity_path))
            self._landuse_file = None
            self._landuse_source = None
            self.landuse_band = landuse_band
            if isinstance(landuse, Landuse):
                self._landuse_source = landuse
                self._grid = describe_raster(sensitivity_path, key="sensitivity")
            elif landuse is not None:
                src = self._stack.enter_context(open_raster(landuse, key="landuse.path"))
                _check_same_grid(self.sensitivity, src, landuse)
                if not 1 <= landuse_band <= src.count:
                    raise InputError(landuse, f"band {landuse_band}", f"has {src.count} band(s)")
                self._landuse_file = src
        except BaseException:
            self._stack.close()
            raise

    def __enter__(self) -> RegionRasters:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    @property
    def shape(self) -> tuple[int, int]:
        return self.sensitivity.height, self.sensitivity.width

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray | None]:
        """Sensitivity (float32, NaN nodata) and land-use codes (int64) of one window."""
        s = self.sensitivity.read(1, window=window, masked=True)
        sensitivity = s.astype(np.float32).filled(np.nan)
        if self._landuse_source is not None:
            return sensitivity, self._landuse_source.on_grid(self._grid, window).astype(np.int64)
        if self._landuse_file is None:
            return sensitivity, None
        lu = self._landuse_file.read(self.landuse_band, window=window, masked=True)
        return sensitivity, lu.astype(np.int64).filled(UNKNOWN_CLASS)


def _check_same_grid(
    reference: rasterio.DatasetReader, other: rasterio.DatasetReader, path: os.PathLike[str] | str
) -> None:
    if not same_grid(reference, other):
        raise InputError(
            path,
            "grid",
            f"{other.width}x{other.height} pixels, {other.crs}, origin "
            f"({other.transform.c:g}, {other.transform.f:g}), pixel {other.transform.a:g} m is "
            f"not the imagery grid ({reference.width}x{reference.height}, {reference.crs}, origin "
            f"({reference.transform.c:g}, {reference.transform.f:g}), pixel "
            f"{reference.transform.a:g} m); align the land use to the imagery first",
        )


def region_hotspots(
    sensitivity_path: str | os.PathLike[str],
    landuse: LanduseSource | None = None,
    classes: Mapping[int, str] | None = None,
    *,
    region: str = "",
    top_share: float = DEFAULT_TOP_SHARE,
    threshold: float | None = None,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    tile_px: int = TILE_PX,
    landuse_band: int = 1,
) -> gpd.GeoDataFrame:
    """Hotspot polygons of one region from its sensitivity (and land-use) rasters, by tiles.

    Same result as :func:`hotspot_polygons` on the whole arrays; see it for the columns.
    """
    if threshold is None:
        threshold = raster_hotspot_threshold(sensitivity_path, top_share, tile_px)
    with RegionRasters(sensitivity_path, landuse, landuse_band=landuse_band) as rasters:
        return _polygons(
            rasters.read,
            *rasters.shape,
            transform=rasters.sensitivity.transform,
            crs=rasters.sensitivity.crs,
            threshold=threshold,
            classes=classes if landuse is not None else None,
            region=region,
            min_pixels=min_pixels,
            tile_px=tile_px,
        )


def write_hotspots(
    path: str | os.PathLike[str],
    regions: Iterable[gpd.GeoDataFrame],
    crs: CRS | str | None = None,
) -> Path:
    """Write every region's hotspots into one GeoPackage layer, atomically.

    All regions must share one CRS (the imagery's); the layer is ``hotspots``. ``crs`` is
    used when there is no region to take it from, so that even an empty layer is located.
    """
    return write_features(
        path,
        regions,
        layer=LAYER,
        columns=COLUMNS,
        geometry_type="Polygon",
        crs=crs,
        style=layer_style_qml(HOTSPOT_OUTLINE, label_field="rank"),
        description="hotspots: outlines labelled by rank (1 = most sensitive)",
    )
