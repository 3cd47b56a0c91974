"""Sensitivity by land-use class: which land types the network reads as pollution sources.

For each region and land-use class (``landuse_sensitivity.csv``):

- ``mean_sensitivity``: mean sensitivity of the covered pixels of the class;
- ``area_share``: the class's share of the covered area;
- ``hotspot_share``: the class's share of the hotspot area (:mod:`soilsource.analysis.hotspots`:
  top share of positive sensitivity, before the polygons' minimum-area filter);
- ``enrichment``: ``hotspot_share / area_share`` (above 1: over-represented in hotspots);
- ``p_value``: one-sided, for "the class is more sensitive than the rest", from a torus
  translation test (below);
- ``rank``: the drivers first, then the other classes, each group by mean sensitivity, 1 =
  most sensitive (ties share the best rank; :func:`mark_drivers`);
- ``driver``: the class drives contamination in this region: significant positive
  evidence (``mean_sensitivity > 0`` and ``p_value < 0.05``) in a region whose model has
  skill (:func:`mark_drivers`). Never true for a class whose evidence is negative.

Shares are taken over covered pixels whose land use is known (a code in the class table),
so they sum to one over the classes. Classes of the table absent from the covered area
get a row with area share 0 and empty statistics.

Plus, per region, the geographical detector q-statistic (Wang et al. 2010) of sensitivity
stratified by land use, ``q = 1 - sum_h N_h sigma_h^2 / (N sigma^2)``: the share of the
variance of sensitivity that land use explains.

Why a (mirrored) torus translation test
---------------------------------------
Sensitivity is spatially autocorrelated (occluding windows and overlapping patches smooth
it), and so is land use. Permuting pixels treats every pixel as an independent draw and
gives p-values that are far too small. Cutting the map into blocks and permuting the
blocks is better but still breaks land use's autocorrelation at every block edge and needs
a block size larger than the unknown correlation range. The torus translation test (Harms
et al. 2001, the standard test of habitat association on a mapped plot) keeps both maps
whole: the land-use map is shifted against the sensitivity map by every offset, wrapping
around the edges, so each map keeps its own spatial structure and only their alignment is
randomised; it is the block permutation whose single block is the whole map. Plain
wrapping puts a seam (opposite edges side by side) through the shifted land use, which
cuts classes into pieces and made q slightly anti-conservative on long-range maps. So the
land use is first mirrored to twice its size in each direction (``numpy.pad(...,
"symmetric")``): the result is periodic with no seam, every sensitivity pixel gets a land
use under every offset, and the ``4 H W`` offsets are enumerated at once by FFT
cross-correlation: exact over its set, deterministic (no seed), seconds per region. The
observed alignment is one of the offsets, so a p-value is never below ``1 / (4 H W)``.
Offsets that put no covered pixel on a class are skipped for that class.

Measured on independent autocorrelated null maps (``python benchmarks/bench_zones.py``:
100 maps of 96 x 96 pixels per setting, Gaussian fields smoothed by 5 or 10 pixels, land
use in four classes, 25 square patches), the share of p-values <= 0.05 for a class mean |
for q, nominal 0.05: pixel permutation 0.40-0.46 | 0.99; block permutation (16 or 32 px
blocks) 0.06-0.15 | 0.06-0.30; plain torus 0.05-0.09 | 0.05-0.09; mirrored torus
0.045-0.052 | 0.04-0.09 (the 0.09 with smoothing 10, where a 96-pixel map holds only a few
independent patches; binomial standard error 0.02). Power at an effect of 0.5 standard
deviations on one class: 0.60 (class) and 0.34 (q); at 1.0: 0.98 and 0.97.

The q-statistic's p-value uses the same offsets (``p_value``); the geodetector's own
non-central F test (Wang, Zhang & Fu 2016; as in the R package ``geodetector``) is given
too (``p_value_ftest``) for comparison with the literature, but it assumes independent
pixels and is anti-conservative on rasters.

Large regions: the test works on a grid of cells of ``cell_px`` x ``cell_px`` pixels
holding sums (sensitivity, its square, coverage) and class fractions, with ``cell_px``
the smallest that keeps the grid under ``max_cells``; with one-pixel cells (every region
up to 724 x 724 pixels by default) it is exactly the pixel-level test. The other
statistics are always exact and computed window by window.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rasterio.windows import Window, subdivide
from scipy import fft, stats

from soilsource.analysis.hotspots import (
    DEFAULT_TOP_SHARE,
    TILE_PX,
    LanduseSource,
    Reader,
    RegionRasters,
    hotspot_mask,
    hotspot_threshold,
    raster_hotspot_threshold,
)
from soilsource.atomic import write_text_atomic
from soilsource.progress import track, warn

TABLE_COLUMNS = [
    "region",
    "class",
    "mean_sensitivity",
    "area_share",
    "hotspot_share",
    "enrichment",
    "p_value",
    "evidence_z",
    "rank",
    "driver",
]
GEODETECTOR_COLUMNS = [
    "region",
    "q",
    "p_value",
    "p_value_ftest",
    "n_pixels",
    "n_classes",
    "cell_px",
]
DEFAULT_MAX_CELLS = 1 << 19
"""Largest grid of the torus test; its FFTs run on twice the size in each direction."""

_MIN_COVER = 0.5  # pixels of a class under an offset below which the offset is skipped
_TIE = 1e-6  # standardised units: FFT round-off is about 1e-9, so closer values are ties


@dataclass(frozen=True)
class ZoneResult:
    """Land-use statistics of one region: the per-class table and the geodetector row."""

    table: pd.DataFrame
    geodetector: dict[str, object]


# --- accumulation, window by window -------------------------------------------------------


def _class_index(landuse: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Index of each pixel's code in the sorted ``codes``; -1 for codes not in the table."""
    landuse = np.asarray(landuse, dtype=np.int64)
    index = np.clip(np.searchsorted(codes, landuse), 0, codes.size - 1)
    return np.where(codes[index] == landuse, index, -1)


def _cell_sums(values: np.ndarray, k: int) -> np.ndarray:
    """Sum over k x k cells (the window is padded with zeros to whole cells)."""
    h, w = values.shape
    padded = np.zeros((math.ceil(h / k) * k, math.ceil(w / k) * k), dtype=values.dtype)
    padded[:h, :w] = values
    return padded.reshape(padded.shape[0] // k, k, padded.shape[1] // k, k).sum(axis=(1, 3))


class _ZoneSums:
    """Exact per-class moments, plus the cell grids the torus test runs on."""

    def __init__(self, n_classes: int, grid_shape: tuple[int, int], cell_px: int) -> None:
        self.n_classes = n_classes
        self.cell_px = cell_px
        self.count = np.zeros(n_classes, np.int64)
        self.mean = np.zeros(n_classes)
        self.m2 = np.zeros(n_classes)  # sum of squared deviations from the class mean
        self.hot = np.zeros(n_classes, np.int64)
        cells = (math.ceil(grid_shape[0] / cell_px), math.ceil(grid_shape[1] / cell_px))
        self.cover = np.zeros(cells)
        self.total = np.zeros(cells)
        self.square = np.zeros(cells)
        self.fraction = np.zeros((n_classes, *cells), np.float32)

    def add(
        self, window: Window, sensitivity: np.ndarray, index: np.ndarray, hot: np.ndarray
    ) -> None:
        covered = np.isfinite(sensitivity)
        known = covered & (index >= 0)
        c, s = index[known], sensitivity[known].astype(np.float64)
        n = np.bincount(c, minlength=self.n_classes)
        if n.any():
            mean = np.bincount(c, s, minlength=self.n_classes) / np.maximum(n, 1)
            m2 = np.bincount(c, (s - mean[c]) ** 2, minlength=self.n_classes)
            # Chan et al.'s pairwise update: no loss of precision over many windows.
            total = self.count + n
            delta = mean - self.mean
            with np.errstate(invalid="ignore", divide="ignore"):
                weight = np.where(total > 0, n / total, 0.0)
            self.m2 += m2 + delta**2 * self.count * weight
            self.mean += delta * weight
            self.count = total
        self.hot += np.bincount(index[hot & known], minlength=self.n_classes)
        k = self.cell_px
        r0, c0 = int(window.row_off) // k, int(window.col_off) // k
        s_all = np.where(covered, sensitivity, 0.0).astype(np.float64)
        total = _cell_sums(s_all, k)
        cells = (slice(r0, r0 + total.shape[0]), slice(c0, c0 + total.shape[1]))
        self.total[cells] += total
        self.cover[cells] += _cell_sums(covered.astype(np.float64), k)
        self.square[cells] += _cell_sums(s_all**2, k)
        for j in range(self.n_classes):
            self.fraction[(j, *cells)] += _cell_sums((index == j).astype(np.float32), k) / k**2


def _accumulate(
    read: Reader,
    height: int,
    width: int,
    codes: np.ndarray,
    threshold: float,
    max_cells: int,
    tile_px: int,
    description: str,
) -> _ZoneSums:
    cell_px = max(1, math.ceil(math.sqrt(height * width / max_cells)))
    tile = cell_px * math.ceil(tile_px / cell_px)  # windows hold whole cells
    sums = _ZoneSums(codes.size, (height, width), cell_px)
    for window in track(subdivide(Window(0, 0, width, height), tile, tile), description):
        sensitivity, landuse = read(window)
        if landuse is None:
            raise ValueError("land-use statistics need a land-use map")
        index = _class_index(landuse, codes)
        sums.add(window, sensitivity, index, hotspot_mask(sensitivity, threshold))
    return sums


# --- the torus translation test -----------------------------------------------------------


def _mirrored(a: np.ndarray) -> np.ndarray:
    """``a`` extended by reflection to twice its size: periodic, with no seam (see above)."""
    return np.pad(a, ((0, a.shape[0]), (0, a.shape[1])), mode="symmetric")


def _torus_test(sums: _ZoneSums) -> tuple[np.ndarray, np.ndarray, float]:
    """One-sided p-value of each class's mean, its standardised effect (how many standard
    deviations of the class means over all offsets the observed mean lies above their
    average), and the p-value of q, over every offset of the land use."""
    p_class = np.full(sums.n_classes, np.nan)
    z_class = np.full(sums.n_classes, np.nan)
    n_all = sums.cover.sum()
    if n_all < 2:
        return p_class, z_class, math.nan
    # Standardise so that the tie tolerance means the same for every map.
    mean = sums.total.sum() / n_all
    var = max(sums.square.sum() / n_all - mean**2, 0.0)
    if var <= 1e-24:
        return p_class, z_class, math.nan
    total = (sums.total - mean * sums.cover) / math.sqrt(var)
    square = (sums.square - 2 * mean * sums.total + mean**2 * sums.cover) / var
    h, w = sums.cover.shape
    shape = (2 * h, 2 * w)

    def zero_padded_spectrum(a: np.ndarray) -> np.ndarray:
        return np.conj(fft.rfft2(a, s=shape, workers=-1))

    def correlate(spectrum: np.ndarray, weights: np.ndarray) -> np.ndarray:
        # Entry (dy, dx): sum over pixels i of a[i] * weights[i + (dy, dx)], cyclically.
        return fft.irfft2(spectrum * weights, s=shape, workers=-1)

    spectra = [zero_padded_spectrum(a) for a in (sums.cover, total, square)]
    within = np.zeros(shape)
    class_mean = np.empty(shape)
    for j in range(sums.n_classes):
        weights = fft.rfft2(_mirrored(sums.fraction[j].astype(np.float64)), workers=-1)
        n, s = correlate(spectra[0], weights), correlate(spectra[1], weights)
        valid = n >= _MIN_COVER
        class_mean.fill(np.nan)
        np.divide(s, n, out=class_mean, where=valid)
        del n
        if valid[0, 0]:
            null = class_mean[valid]
            p_class[j] = np.mean(null >= class_mean[0, 0] - _TIE)
            spread = float(null.std())
            z_class[j] = (class_mean[0, 0] - null.mean()) / spread if spread > _TIE else 0.0
        # within-class sum of squares: ss - s * mean, in place to bound memory
        ss = correlate(spectra[2], weights)
        np.multiply(s, class_mean, out=s, where=valid)
        np.subtract(ss, s, out=ss)
        ss[~valid] = 0.0
        within += ss
        del s, ss, weights
    known = fft.rfft2(_mirrored(sums.fraction.sum(axis=0, dtype=np.float64)), workers=-1)
    n, s, ss = (correlate(f, known) for f in spectra)
    with np.errstate(invalid="ignore", divide="ignore"):
        total_ss = ss - s**2 / n
        q = np.where((n >= 2) & (total_ss > _TIE), 1.0 - within / total_ss, np.nan)
    valid = np.isfinite(q)
    p_q = float(np.mean(q[valid] >= q[0, 0] - _TIE)) if valid[0, 0] else math.nan
    return p_class, z_class, p_q


# --- statistics ---------------------------------------------------------------------------


def _geodetector_ftest(q: float, count: np.ndarray, mean: np.ndarray, var: float) -> float:
    """The geodetector's non-central F test of q (independent pixels assumed)."""
    present = count > 0
    n, strata = int(count.sum()), int(present.sum())
    if strata < 2 or n <= strata or not np.isfinite(q) or var <= 0:
        return math.nan
    if q >= 1.0:
        return 0.0
    f = (n - strata) / (strata - 1) * q / (1 - q)
    m, c = mean[present], count[present]
    lam = max((np.sum(m**2) - np.sum(np.sqrt(c) * m) ** 2 / n) / var, 0.0)
    return float(stats.ncf.sf(f, strata - 1, n - strata, lam))


def _results(
    sums: _ZoneSums, codes: np.ndarray, classes: Mapping[int, str], region: str
) -> ZoneResult:
    count, hot = sums.count, sums.hot
    n, n_hot = int(count.sum()), int(hot.sum())
    present = count > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(present, sums.mean, np.nan)
        area_share = count / n if n else np.full(codes.size, np.nan)
        hotspot_share = hot / n_hot if n_hot else np.full(codes.size, np.nan)
        enrichment = np.where(area_share > 0, hotspot_share / area_share, np.nan)
    p_class, z_class, p_q = _torus_test(sums)
    grand = float(np.sum(count * sums.mean) / n) if n else math.nan
    between = float(np.sum(count * (sums.mean - grand) ** 2)) if n else math.nan
    total_ss = float(sums.m2.sum()) + between
    q = 1.0 - float(sums.m2.sum()) / total_ss if n >= 2 and total_ss > 0 else math.nan
    if n == 0:
        warn(f"region {region!r}: no covered pixel has a land-use class of the table")
    table = pd.DataFrame(
        {
            "region": region,
            "class": [classes[int(c)] for c in codes],
            "mean_sensitivity": mean,
            "area_share": area_share,
            "hotspot_share": hotspot_share,
            "enrichment": enrichment,
            "p_value": np.where(present, p_class, np.nan),
            "evidence_z": np.where(present, z_class, np.nan),
        }
    )
    table["rank"] = pd.NA  # set with the drivers
    table["driver"] = False
    geodetector = {
        "region": region,
        "q": q,
        "p_value": p_q,
        "p_value_ftest": _geodetector_ftest(q, count, sums.mean, total_ss / n if n else 0.0),
        "n_pixels": n,
        "n_classes": int(present.sum()),
        "cell_px": sums.cell_px,
    }
    return mark_drivers(ZoneResult(table[TABLE_COLUMNS], geodetector))


DRIVER_P = 0.05
"""p-value below which a class with positive mean sensitivity is a driver."""


def mark_drivers(result: ZoneResult, skill: bool = True, p: float = DRIVER_P) -> ZoneResult:
    """``result`` with the ``driver`` column set (positive mean, p-value below ``p``, skill)
    and ranked: the drivers first, then the rest, each group by mean sensitivity.

    Why drivers first. ``rank`` answers the user's question, which land types drive
    contamination. A class whose mean is high but not distinguishable from where the land
    use happens to lie (the torus test: a small or patchy class near one strong source) is
    weaker evidence than a driver's, so it should not be named above one. Measured in
    session 12 (``bench_planted``, ``bench_explain``; docs/method.md): planted
    ``sparse_vegetation`` emitters first in 4 of 6 seeds instead of 3 (in the seed that
    changed, the one driver was third by mean, behind two classes with p 0.2-0.5),
    ``bright`` 6 of 6 either way; the synthetic city's land-use Spearman 0.831 against 0.829
    at the default training, 0.776 against 0.783 at the demo's; Meuse unchanged (its first
    class is its only driver). Without skill there are no drivers, and the order is the
    mean's.

    >>> table = pd.DataFrame({"class": ["a", "b", "c"], "mean_sensitivity": [0.2, -0.1, 0.3],
    ...                       "p_value": [0.01, 0.01, 0.2]})
    >>> mark_drivers(ZoneResult(table, {})).table[["class", "driver", "rank"]]
      class  driver  rank
    0     a    True     1
    1     c   False     2
    2     b   False     3
    >>> mark_drivers(ZoneResult(table, {}), skill=False).table["class"].tolist()
    ['c', 'a', 'b']
    """
    table = result.table.copy()
    mean = table["mean_sensitivity"]
    positive = mean.fillna(0.0) > 0
    significant = table["p_value"].fillna(1.0) < p
    driver = (positive & significant & skill).astype(bool)
    table["driver"] = driver
    first = mean.where(driver).rank(ascending=False, method="min")
    rest = mean.where(~driver).rank(ascending=False, method="min") + int(driver.sum())
    table["rank"] = first.fillna(rest).astype("Int64")
    table = table.sort_values(["rank", "class"], na_position="last", ignore_index=True)
    return ZoneResult(table, result.geodetector)


def _sorted_codes(classes: Mapping[int, str]) -> np.ndarray:
    if not classes:
        raise ValueError("the land-use class table is empty")
    return np.array(sorted(int(c) for c in classes), dtype=np.int64)


def landuse_statistics(
    sensitivity: np.ndarray,
    landuse: np.ndarray,
    classes: Mapping[int, str],
    *,
    region: str = "",
    top_share: float = DEFAULT_TOP_SHARE,
    threshold: float | None = None,
    max_cells: int = DEFAULT_MAX_CELLS,
    tile_px: int = TILE_PX,
) -> ZoneResult:
    """Sensitivity by land-use class of one region, from arrays on one grid.

    Parameters
    ----------
    sensitivity:
        (H, W) sensitivity mosaic, NaN where no patch covers.
    landuse:
        (H, W) integer land-use codes; codes not in ``classes`` are unknown.
    classes:
        Class table ``{code: name}``.
    region:
        Written in the ``region`` column.
    top_share, threshold:
        Hotspot definition (see :mod:`soilsource.analysis.hotspots`); a given threshold wins.
    max_cells:
        Largest grid of the torus test (see the module notes).
    tile_px:
        Side of the windows the statistics are accumulated over.

    Returns
    -------
    ZoneResult
        ``table`` with :data:`TABLE_COLUMNS`, one row per class of the table, best rank
        first; ``geodetector`` with :data:`GEODETECTOR_COLUMNS`.

    Examples
    --------
    >>> s = np.array([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    >>> lu = np.array([[1, 1, 2, 2], [1, 1, 2, 2]])
    >>> result = landuse_statistics(s, lu, {1: "industrial", 2: "paddy"}, region="a")
    >>> result.table[["class", "mean_sensitivity", "area_share", "rank"]]
            class  mean_sensitivity  area_share  rank
    0  industrial               1.0         0.5     1
    1       paddy               0.0         0.5     2
    >>> result.geodetector["q"]
    1.0
    """
    sensitivity = np.asarray(sensitivity, dtype=np.float32)
    landuse = np.asarray(landuse)
    if landuse.shape != sensitivity.shape:
        raise ValueError(f"landuse {landuse.shape} and sensitivity {sensitivity.shape} differ")
    codes = _sorted_codes(classes)
    if threshold is None:
        threshold = hotspot_threshold(sensitivity, top_share)

    def read(w: Window) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = w.toslices()
        return sensitivity[rows, cols], landuse[rows, cols]

    height, width = sensitivity.shape
    sums = _accumulate(
        read, height, width, codes, threshold, max_cells, tile_px, f"land use {region}"
    )
    return _results(sums, codes, classes, region)


def region_landuse_statistics(
    sensitivity_path: str | os.PathLike[str],
    landuse: LanduseSource,
    classes: Mapping[int, str],
    *,
    region: str = "",
    top_share: float = DEFAULT_TOP_SHARE,
    threshold: float | None = None,
    max_cells: int = DEFAULT_MAX_CELLS,
    tile_px: int = TILE_PX,
    landuse_band: int = 1,
) -> ZoneResult:
    """:func:`landuse_statistics` of a region's rasters, read window by window.

    ``landuse`` is a raster file on the sensitivity (imagery) grid (its nodata is unknown
    land use; :class:`~soilsource.errors.InputError` when it is off the grid) or a
    :class:`~soilsource.inputs.landuse.Landuse`, put on the grid window by window.
    """
    codes = _sorted_codes(classes)
    if threshold is None:
        threshold = raster_hotspot_threshold(sensitivity_path, top_share, tile_px)
    with RegionRasters(sensitivity_path, landuse, landuse_band=landuse_band) as rasters:
        sums = _accumulate(
            rasters.read, *rasters.shape, codes, threshold, max_cells, tile_px, f"land use {region}"
        )
    return _results(sums, codes, classes, region)


def write_landuse_sensitivity(path: str | os.PathLike[str], results: Iterable[ZoneResult]) -> Path:
    """Write ``landuse_sensitivity.csv`` (all regions, :data:`TABLE_COLUMNS`), atomically."""
    tables = [r.table for r in results]
    frame = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=TABLE_COLUMNS)
    return write_text_atomic(path, frame[TABLE_COLUMNS].to_csv(index=False))


def write_geodetector(path: str | os.PathLike[str], results: Iterable[ZoneResult]) -> Path:
    """Write the q-statistic of every region (:data:`GEODETECTOR_COLUMNS`), atomically."""
    frame = pd.DataFrame([r.geodetector for r in results], columns=GEODETECTOR_COLUMNS)
    return write_text_atomic(path, frame.to_csv(index=False))
