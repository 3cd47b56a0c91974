"""Candidate sources: land-use objects ranked by their attributed effect on the samples around them.

This is the inspector's question, "which sites do we visit first?". The answer is built from
two things the run already has, and a choice documented here once:

- **Objects.** With a land-use map, an object is a connected patch of one class
  (4-connectivity) on the imagery grid: a parcel, or several touching parcels of the same
  class. A patch larger than ``2 * cell_px**2`` pixels (a paddy tract, a road network) is
  cut by a grid of ``cell_px`` pixels, so that one object is never a whole landscape.
  Without a land-use map the objects are the cells of that grid ("segments" of class
  ``cell``).
- **Effect of an object on a sample.** From the sample's occlusion map ``m_i`` (drops of
  the predicted standardised log concentration, :mod:`soilsource.explain.occlusion`,
  ``output="raw"``): ``e_i(O) = sum over the object's pixels in the patch of m_i / w**2``
  (``w``: the occluding window's side). Occlusion drops are averages over the windows
  covering a pixel, so this is the drop of the prediction the object's pixels carry, in
  units of one window's worth of occlusion; it is signed (positive: the object raises the
  sample's predicted Cd).
- **Effect of an object.** The samples' effects weighted by how contaminated the samples
  actually are (``weights``: by default each sample's measured exceedance of its own limit,
  ``max(log(value / limit), 0)``) and summed over the samples whose patch sees the object:
  the measured contamination the model attributes to the object. Emitting and idle
  factories can look alike from above; what tells them apart is whether the samples next to
  them are contaminated, and the network says which of a sample's surroundings it reads as
  the cause. The 95 % interval is a percentile bootstrap over the region's samples.
- ``n_samples``: samples whose patch sees the object with a positive effect.

Candidates are the objects with a positive effect, ranked by it (1 = strongest), at most
``top`` per region, of the classes that drive contamination in the region (significant
positive evidence, :func:`soilsource.analysis.zones.mark_drivers`; every class when none does or
there is no land-use map). A region whose model has no skill gets none
(:mod:`soilsource.pipeline.runner`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import cast

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import shapes
from rasterio.windows import Window
from scipy import ndimage, sparse

from soilsource.gisout import layer_style_qml, write_features

LAYER = "candidates"
CANDIDATE_OUTLINE = "#00e5ff"
"""Outline colour of candidates, in the report (report.css) and in the layer's QGIS style."""
COLUMNS = [
    "region",
    "rank",
    "class",
    "area_m2",
    "x",
    "y",
    "effect",
    "effect_lo",
    "effect_hi",
    "n_samples",
    "value_max",
    "value_median",
    "nearest_sample_m",
]
"""SPEC columns (region .. n_samples), then the measured concentrations nearby: the highest
and median measured value of the samples the object affects (mg/kg) and the distance from
the object's centroid to the nearest of them."""
CELL_CLASS = "cell"
DEFAULT_TOP = 20
N_BOOT = 400
OBJECT_BLOCK = 4096
"""Objects whose bootstrap effects are resampled at once (:func:`object_effects`)."""


def covered_window(patches, height: int, width: int) -> Window:
    """The part of a ``height`` x ``width`` grid that any of ``patches`` covers.

    >>> from soilsource.data.patches import Patches
    >>> p = Patches(np.zeros((2, 1, 4, 4)), np.ones((2, 4, 4), bool), np.array([-1, 5]),
    ...             np.array([2, 3]), np.arange(2), ("b",))
    >>> covered_window(p, 8, 20)
    Window(col_off=2, row_off=0, width=5, height=8)
    """
    size = patches.size_px
    top, left = max(int(patches.row_off.min()), 0), max(int(patches.col_off.min()), 0)
    bottom = min(int(patches.row_off.max()) + size, height)
    right = min(int(patches.col_off.max()) + size, width)
    return Window(left, top, max(right - left, 0), max(bottom - top, 0))


def object_labels(
    codes: np.ndarray | None,
    classes: Mapping[int, str] | None,
    cell_px: int,
    valid: np.ndarray | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Objects on a grid: int32 labels (0 = none) and the class name of each label.

    Parameters
    ----------
    codes:
        (H, W) land-use codes on the imagery grid, or None (then grid cells are objects).
    classes:
        ``{code: name}``; codes not in it belong to no object.
    cell_px:
        Side of the grid that cuts large patches (and of the cells without land use).
    valid:
        (H, W) where objects may be (default: everywhere); needed without land use.

    Examples
    --------
    >>> codes = np.array([[1, 1, 2, 2], [1, 1, 2, 1]])
    >>> labels, names = object_labels(codes, {1: "industrial", 2: "paddy"}, cell_px=8)
    >>> labels
    array([[1, 1, 3, 3],
           [1, 1, 3, 2]], dtype=int32)
    >>> names
    ['', 'industrial', 'industrial', 'paddy']
    """
    if cell_px < 1:
        raise ValueError(f"cell_px must be >= 1, got {cell_px}")
    shape = np.shape(codes if codes is not None else cast(np.ndarray, valid))
    ncols = shape[1] // cell_px + 1
    # Cell ids only for the pixels asked about (a region-size int64 grid of them, and
    # np.indices's two more, took 0.5 GB on a 4,096 px region).
    n_cells = ((shape[0] - 1) // cell_px) * ncols + (shape[1] - 1) // cell_px + 1

    def cells(mask: np.ndarray) -> np.ndarray:
        rows, cols = np.nonzero(mask)  # row-major, as mask indexing orders pixels
        return (rows // cell_px) * ncols + cols // cell_px

    labels = np.zeros(shape, np.int32)
    names = [""]
    if codes is None:
        if valid is None:
            raise ValueError("without land use, give the valid area")
        _, inverse = np.unique(cells(valid), return_inverse=True)
        labels[valid] = inverse + 1
        return labels, names + [CELL_CLASS] * (int(inverse.max()) + 1 if inverse.size else 0)
    codes = np.asarray(codes)
    inside = np.ones(shape, bool) if valid is None else valid
    classes = classes or {}
    for code in sorted(classes):
        mask = (codes == code) & inside
        if not mask.any():
            continue
        component, _ = ndimage.label(mask)
        sizes = np.bincount(component.ravel())
        big = sizes > 2 * cell_px * cell_px
        big[0] = False
        mine = component[mask]  # the class's pixels only: memory follows the class's area
        del component
        key = np.where(big[mine], mine.astype(np.int64) * n_cells + cells(mask), mine)
        _, inverse = np.unique(key, return_inverse=True)
        start = len(names)
        labels[mask] = inverse + start
        names += [classes[code]] * (int(inverse.max()) + 1)
    return labels, names


def sample_effects(
    maps: np.ndarray,
    row_off: np.ndarray,
    col_off: np.ndarray,
    labels: np.ndarray,
    window_px: int,
) -> sparse.csr_matrix:
    """``e_i(O)``: the (samples x objects + 1) sparse matrix of each object's effect on each
    sample, from the per-sample occlusion maps (column 0: pixels of no object).

    >>> maps = np.ones((1, 2, 2)); labels = np.array([[1, 1, 0], [2, 0, 0]], np.int32)
    >>> sample_effects(maps, np.array([0]), np.array([0]), labels, 1).toarray()
    array([[1., 2., 1.]])
    """
    n = len(maps)
    h, w = labels.shape
    size_y, size_x = maps.shape[1:]
    n_objects = int(labels.max()) + 1
    rows, cols, vals = [], [], []
    for i in range(n):
        r0, c0 = int(row_off[i]), int(col_off[i])
        y0, y1, x0, x1 = max(r0, 0), min(r0 + size_y, h), max(c0, 0), min(c0 + size_x, w)
        if y0 >= y1 or x0 >= x1:
            continue
        lab = labels[y0:y1, x0:x1].ravel()
        m = np.asarray(maps[i][y0 - r0 : y1 - r0, x0 - c0 : x1 - c0], np.float64).ravel()
        seen = np.isfinite(m)
        ids, inverse = np.unique(lab[seen], return_inverse=True)
        rows.append(np.full(ids.size, i))
        cols.append(ids)
        vals.append(np.bincount(inverse, m[seen]) / window_px**2)
    if not rows:
        return sparse.csr_matrix((n, n_objects))
    matrix = sparse.coo_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n, n_objects),
    )
    return matrix.tocsr()


def object_effects(
    effects: sparse.csr_matrix,
    weights: np.ndarray,
    *,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> pd.DataFrame:
    """Effect of every object with its 95 % bootstrap interval and the samples it affects.

    ``effect = sum_i weights_i * e_i(O)``; the interval resamples the samples (with
    replacement, ``n_boot`` times). Rows are objects 1 .. (column 0, no object, is left out).

    >>> e = sparse.csr_matrix(np.array([[0.0, 1.0, -1.0], [0.0, 2.0, 0.0]]))
    >>> object_effects(e, np.array([1.0, 0.5]), n_boot=50)[["effect", "n_samples"]]
       effect  n_samples
    1     2.0          2
    2    -1.0          0
    """
    weights = np.asarray(weights, np.float64)
    n = effects.shape[0]
    weighted = sparse.diags(weights) @ effects
    effect = np.asarray(weighted.sum(axis=0)).ravel()
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(n_boot)])
    resamples = sparse.csr_matrix(counts.astype(np.float64))
    weighted = sparse.csr_matrix(weighted)
    # Objects a block at a time: the resampled effects of all objects at once are
    # n_boot x objects (400 x 200,000 parcels of a large scene: 0.6 GB, and the
    # percentile sorts a copy); a column block is the same arithmetic, 13 MB.
    n_objects = weighted.shape[1]
    lo, hi = np.empty(n_objects), np.empty(n_objects)
    for start in range(0, n_objects, OBJECT_BLOCK):
        block = slice(start, start + OBJECT_BLOCK)
        boot = np.asarray((resamples @ weighted[:, block]).todense())
        lo[block], hi[block] = np.percentile(boot, [2.5, 97.5], axis=0)
    positive = effects.multiply(effects > 0)
    n_samples = np.asarray((positive > 0).sum(axis=0)).ravel()
    frame = pd.DataFrame(
        {
            "effect": effect,
            "effect_lo": lo,
            "effect_hi": hi,
            "n_samples": n_samples.astype(np.int64),
        }
    )
    return frame.iloc[1:]


def exceedance_weights(values: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """How far each sample's measured value exceeds its own limit, in log units (0 below).

    >>> exceedance_weights(np.array([0.6, 0.2]), np.array([0.3, 0.3])).round(3).tolist()
    [0.693, 0.0]
    """
    values = np.maximum(np.asarray(values, np.float64), 1e-12)
    return np.maximum(np.log(values / np.asarray(limits, np.float64)), 0.0)


def region_candidates(
    effects: pd.DataFrame,
    labels: np.ndarray,
    names: list[str],
    *,
    transform: Affine,
    crs: CRS | str | None,
    region: str,
    sample_xy: np.ndarray,
    sample_values: np.ndarray,
    affected: sparse.csr_matrix,
    top: int = DEFAULT_TOP,
    classes: Iterable[str] | None = None,
) -> gpd.GeoDataFrame:
    """The ``top`` objects of positive effect as polygons with the columns of :data:`COLUMNS`.

    ``affected`` is :func:`sample_effects`' matrix (which samples each object affects);
    ``sample_xy`` and ``sample_values`` the samples' map coordinates and measured values.
    ``classes``: only objects of these classes are candidates (the region's drivers);
    None or empty: every class.
    """
    chosen = effects[effects["effect"] > 0]
    allowed = set(classes or ())
    if allowed:
        chosen = chosen[[names[k] in allowed for k in chosen.index]]
    chosen = chosen.sort_values("effect", ascending=False).head(top)
    pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
    slices = ndimage.find_objects(labels, max_label=int(labels.max()) if labels.size else 0)
    columns = affected.tocsc()
    records, geometries = [], []
    for rank, (obj, row) in enumerate(chosen.iterrows(), start=1):
        sl = slices[obj - 1]
        part = labels[sl] == obj
        offset = transform @ Affine.translation(sl[1].start, sl[0].start)
        polygons = [
            shapely.geometry.shape(g)
            for g, v in shapes(part.astype(np.uint8), mask=part, transform=offset)
            if v == 1
        ]
        geometry = shapely.union_all(polygons) if len(polygons) > 1 else polygons[0]
        centroid = geometry.centroid
        column = columns[:, obj]
        samples = column.indices[column.data > 0]
        near = sample_values[samples] if samples.size else np.array([np.nan])
        distance = (
            float(np.min(np.hypot(*(sample_xy[samples] - [centroid.x, centroid.y]).T)))
            if samples.size
            else math.nan
        )
        records.append(
            {
                "region": region,
                "rank": rank,
                "class": names[obj],
                "area_m2": float(part.sum() * pixel_area),
                "x": centroid.x,
                "y": centroid.y,
                "effect": float(row["effect"]),
                "effect_lo": float(row["effect_lo"]),
                "effect_hi": float(row["effect_hi"]),
                "n_samples": int(row["n_samples"]),
                "value_max": float(np.nanmax(near)) if np.isfinite(near).any() else math.nan,
                "value_median": float(np.nanmedian(near)) if np.isfinite(near).any() else math.nan,
                "nearest_sample_m": distance,
            }
        )
        geometries.append(geometry)
    frame = pd.DataFrame(records, columns=COLUMNS)
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geometries, crs=crs), crs=crs)


def write_candidates(
    path: str | os.PathLike[str], regions: Iterable[gpd.GeoDataFrame], crs: CRS | str | None
) -> Path:
    """Write every region's candidates into one GeoPackage layer, atomically, with a QGIS
    style in its ``layer_styles`` (the report's cyan outlines, labelled by rank)."""
    return write_features(
        path,
        regions,
        layer=LAYER,
        columns=COLUMNS,
        geometry_type="MultiPolygon",
        crs=crs,
        style=layer_style_qml(CANDIDATE_OUTLINE, label_field="rank"),
        description="candidate sources: outlines labelled by rank (1 = strongest)",
    )
