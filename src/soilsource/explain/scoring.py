"""Scoring explanations against a known truth (the synthetic city).

Two questions per region, matching what the explanation is for:

- *Does the sensitivity map point at the sources?* ROC AUC of sensitivity at separating
  true source pixels from the other covered pixels. A source pixel is one whose true
  anthropogenic contribution (``truth/contribution/REGION.tif``) is positive and among the
  top ``1 - source_quantile`` (default: top 10 %) of the covered pixels: the places that
  actually load the soil with Cd, judged where the map has values. 0.5 is chance.
- *Does it rank the land types right?* Spearman correlation between the ranking of land
  use of ``landuse_sensitivity.csv`` (its ``rank``) and the true ranking by mean
  contribution: the city's own ``landuse_ranking`` (whole region, ``truth/summary.json``)
  and the same ranking recomputed over the covered pixels only, which is all the model
  could see. Both use the classes the two rankings share (at least three, else NaN).

Memory stays bounded: rasters are read window by window, and the AUC uses at most
``max_pixels`` covered pixels (every k-th in raster order when there are more).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from rasterio.transform import rowcol
from rasterio.windows import Window, subdivide
from scipy import ndimage, stats
from sklearn.metrics import roc_auc_score

from soilsource.inputs.imagery import same_grid

DEFAULT_SOURCE_QUANTILE = 0.9
MAX_PIXELS = 2_000_000
SCORE_COLUMNS = [
    "region",
    "source_auc",
    "n_pixels",
    "n_source",
    "spearman_landuse",
    "spearman_landuse_covered",
    "n_classes_compared",
]


def source_auc(
    sensitivity: np.ndarray,
    contribution: np.ndarray,
    source_quantile: float = DEFAULT_SOURCE_QUANTILE,
) -> float:
    """ROC AUC of sensitivity for the true source pixels among the covered ones.

    Pixels where either value is NaN are not covered. NaN when there is no source pixel
    or nothing but source pixels.

    >>> s = np.array([0.9, 0.8, 0.1, 0.2, np.nan])
    >>> c = np.array([5.0, 0.0, 0.0, 0.0, 9.0])
    >>> source_auc(s, c, source_quantile=0.5)
    1.0
    """
    s = np.asarray(sensitivity, dtype=np.float64).ravel()
    c = np.asarray(contribution, dtype=np.float64).ravel()
    covered = np.isfinite(s) & np.isfinite(c)
    source = source_pixels(c[covered], source_quantile)
    if source.all() or not source.any():
        return math.nan
    return float(roc_auc_score(source, s[covered]))


def source_pixels(contribution: np.ndarray, source_quantile: float) -> np.ndarray:
    """True source pixels: positive contribution in the top ``1 - source_quantile``.

    >>> source_pixels(np.array([0.0, 0.0, 1.0, 3.0]), 0.5).tolist()
    [False, False, True, True]
    """
    if not 0.0 <= source_quantile < 1.0:
        raise ValueError(f"source_quantile must be in [0, 1), got {source_quantile}")
    c = np.asarray(contribution, dtype=np.float64)
    if c.size == 0:
        return np.zeros(0, bool)
    return (c >= np.quantile(c, source_quantile)) & (c > 0)


def ranking_spearman(estimated: Sequence[str], truth: Sequence[str]) -> float:
    """Spearman correlation of two rankings (best first) over the classes they share.

    >>> ranking_spearman(["industrial", "paddy", "forest"], ["industrial", "forest", "paddy"])
    0.5
    >>> ranking_spearman(["a", "b", "c", "x"], ["c", "b", "a"])
    -1.0
    """
    common = [c for c in estimated if c in set(truth)]
    if len(common) < 3:
        return math.nan
    position = {c: i for i, c in enumerate(c for c in truth if c in set(common))}
    rho = stats.spearmanr(np.arange(len(common)), [position[c] for c in common]).statistic
    return float(rho)


def _check_grid(reference: rasterio.DatasetReader, other: rasterio.DatasetReader) -> None:
    if not same_grid(reference, other):
        raise ValueError(f"{other.name} is not on the grid of {reference.name}")


def _covered_values(
    sensitivity_path: str | os.PathLike[str],
    contribution_path: str | os.PathLike[str],
    landuse_path: str | os.PathLike[str] | None,
    max_pixels: int,
    tile_px: int = 1024,
) -> tuple[np.ndarray, np.ndarray, dict[int, tuple[int, float]]]:
    """Sensitivity and contribution of (a regular subset of) the covered pixels, and the
    exact pixel count and contribution sum per land-use code over all covered pixels."""
    with (
        rasterio.open(sensitivity_path) as s_src,
        rasterio.open(contribution_path) as c_src,
        rasterio.open(landuse_path) if landuse_path else nullcontext() as l_src,
    ):
        _check_grid(s_src, c_src)
        if l_src is not None:
            _check_grid(s_src, l_src)
        windows = list(subdivide(Window(0, 0, s_src.width, s_src.height), tile_px, tile_px))

        def read(window: Window) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            s = s_src.read(1, window=window, masked=True).astype(np.float64).filled(np.nan)
            c = c_src.read(1, window=window, masked=True).astype(np.float64).filled(np.nan)
            return s, c, np.isfinite(s) & np.isfinite(c)

        n_covered = sum(int(read(w)[2].sum()) for w in windows)
        step = max(1, math.ceil(n_covered / max_pixels))
        kept_s, kept_c = [], []
        by_code: dict[int, tuple[int, float]] = {}
        seen = 0
        for window in windows:
            s, c, covered = read(window)
            values_s, values_c = s[covered], c[covered]
            first = (-seen) % step  # keep global indices 0, step, 2 step, ...
            kept_s.append(values_s[first::step])
            kept_c.append(values_c[first::step])
            seen += values_s.size
            if l_src is not None:
                codes = l_src.read(1, window=window)[covered].astype(np.int64)
                for code in np.unique(codes).tolist():
                    n, total = by_code.get(code, (0, 0.0))
                    pick = codes == code
                    by_code[code] = (n + int(pick.sum()), total + float(values_c[pick].sum()))
    return np.concatenate(kept_s or [[]]), np.concatenate(kept_c or [[]]), by_code


def score_region(
    sensitivity_path: str | os.PathLike[str],
    contribution_path: str | os.PathLike[str],
    *,
    estimated_ranking: Sequence[str],
    true_ranking: Sequence[str],
    landuse_path: str | os.PathLike[str] | None = None,
    classes: dict[int, str] | None = None,
    source_quantile: float = DEFAULT_SOURCE_QUANTILE,
    max_pixels: int = MAX_PIXELS,
) -> dict[str, object]:
    """Scores of one region's sensitivity map against its truth rasters.

    ``landuse_path`` and ``classes`` (on the same grid) enable the covered-area ranking.
    ``n_pixels`` and ``n_source`` count the covered pixels the AUC used (all of them up
    to ``max_pixels``) and the source pixels among them.
    """
    s, c, by_code = _covered_values(sensitivity_path, contribution_path, landuse_path, max_pixels)
    auc = source_auc(s, c, source_quantile)
    covered_ranking: list[str] = []
    if classes:
        means = {classes[k]: t / n for k, (n, t) in by_code.items() if k in classes and n > 0}
        covered_ranking = sorted(means, key=lambda k: -means[k])
    common = [k for k in estimated_ranking if k in set(true_ranking)]
    return {
        "source_auc": auc,
        "n_pixels": int(s.size),
        "n_source": int(source_pixels(c, source_quantile).sum()),
        "spearman_landuse": ranking_spearman(estimated_ranking, true_ranking),
        "spearman_landuse_covered": ranking_spearman(estimated_ranking, covered_ranking),
        "n_classes_compared": len(common),
    }


def score_run(
    run_dir: str | os.PathLike[str],
    city_dir: str | os.PathLike[str],
    *,
    source_quantile: float = DEFAULT_SOURCE_QUANTILE,
    max_pixels: int = MAX_PIXELS,
) -> pd.DataFrame:
    """Score every region of a run on the synthetic city against the city's truth.

    Reads ``RUN/sensitivity/REGION.tif`` and ``RUN/landuse_sensitivity.csv``, and
    ``CITY/truth/summary.json``, ``CITY/truth/contribution/REGION.tif``,
    ``CITY/landuse/REGION.tif`` with ``CITY/landuse/classes.csv``. Regions without a
    sensitivity map are left out.
    """
    run, city = Path(run_dir), Path(city_dir)
    summary = json.loads((city / "truth" / "summary.json").read_text(encoding="utf-8"))
    table = pd.read_csv(run / "landuse_sensitivity.csv")
    classes_csv = pd.read_csv(city / "landuse" / "classes.csv")
    classes = dict(zip(classes_csv["code"].astype(int), classes_csv["name"], strict=True))
    rows = []
    for region, truth in summary["regions"].items():
        sensitivity = run / "sensitivity" / f"{region}.tif"
        if not sensitivity.exists():
            continue
        ranked = table[(table.region == region) & table["rank"].notna()].sort_values("rank")
        scores = score_region(
            sensitivity,
            city / "truth" / "contribution" / f"{region}.tif",
            estimated_ranking=ranked["class"].tolist(),
            true_ranking=truth["landuse_ranking"],
            landuse_path=city / "landuse" / f"{region}.tif",
            classes=classes,
            source_quantile=source_quantile,
            max_pixels=max_pixels,
        )
        rows.append({"region": region, **scores})
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


CANDIDATE_COLUMNS = [
    "region",
    "precision_at_k",
    "k",
    "emitting_share",
    "informed_precision_at_k",
    "n_candidates",
]


def candidate_scores(
    candidates: pd.DataFrame,
    city_dir: str | os.PathLike[str],
    *,
    cell_px: int,
    k: int = 10,
) -> pd.DataFrame:
    """Precision of the top ``k`` candidates of each region among the truly emitting parcels.

    A candidate is emitting when at least half of its pixels lie on an emitting industrial
    parcel (``truth/sources.gpkg``, type ``industrial_site``). The chance level is the
    emitting share of the region's industrial objects, cut as the candidates are
    (:func:`soilsource.explain.candidates.object_labels` with ``cell_px``): what picking
    industrial objects at random would give. ``candidates`` is ``candidates.gpkg`` (with
    geometry) on the city's grid CRS. Regions without candidates get precision NaN.

    ``informed_precision_at_k`` is what the samples can tell at best, a ceiling in the
    manner of ``visible_oracle_auc``: the precision of :func:`informed_picks`, which knows
    each sample's exact Cd from industrial sites (``truth/samples.csv`` column ``site``: no
    background, no lab noise, no other pathway) and names the industrial object nearest to
    the most enriched samples. Emitters and idle factories look alike from above, so a
    ranking from imagery and samples cannot be expected to beat it.
    """
    import geopandas as gpd
    from rasterio.features import rasterize

    from soilsource.explain.candidates import object_labels

    city = Path(city_dir)
    sources = gpd.read_file(city / "truth" / "sources.gpkg", layer="sources")
    classes_csv = pd.read_csv(city / "landuse" / "classes.csv")
    industrial = int(classes_csv.loc[classes_csv["name"] == "industrial", "code"].iloc[0])
    summary = json.loads((city / "truth" / "summary.json").read_text(encoding="utf-8"))
    truth_samples = pd.read_csv(city / "truth" / "samples.csv")
    rows = []
    for region in summary["regions"]:
        with rasterio.open(city / "landuse" / f"{region}.tif") as src:
            landuse, transform, shape = src.read(1), src.transform, (src.height, src.width)
        parcels = sources[(sources["region"] == region) & (sources["type"] == "industrial_site")]
        emitting = np.zeros(shape, np.uint8)
        if len(parcels):
            emitting = rasterize([(g, 1) for g in parcels.geometry], shape, transform=transform)
        labels, _ = object_labels(landuse, {industrial: "industrial"}, cell_px)
        area = np.bincount(labels.ravel())[1:]
        on = np.bincount(labels.ravel(), emitting.ravel().astype(float))[1:]
        hit = on / np.maximum(area, 1) >= 0.5
        share = float(np.mean(hit)) if area.size else math.nan
        own = truth_samples[truth_samples["region"] == region]
        rows_px, cols_px = rowcol(transform, own["x"].to_numpy(float), own["y"].to_numpy(float))
        picks = informed_picks(
            labels, np.asarray(rows_px), np.asarray(cols_px), own["site"].to_numpy(float), k
        )
        informed = float(np.mean(hit[picks - 1])) if picks.size else math.nan
        mine = candidates[candidates["region"] == region].sort_values("rank").head(k)
        hits = []
        for geometry in mine.geometry:
            inside = rasterize([(geometry, 1)], shape, transform=transform).astype(bool)
            hits.append(bool(inside.any() and emitting[inside].mean() >= 0.5))
        rows.append(
            {
                "region": region,
                "precision_at_k": float(np.mean(hits)) if hits else math.nan,
                "k": k,
                "emitting_share": share,
                "informed_precision_at_k": informed,
                "n_candidates": len(mine),
            }
        )
    return pd.DataFrame(rows, columns=CANDIDATE_COLUMNS)


def informed_picks(
    labels: np.ndarray, rows: np.ndarray, cols: np.ndarray, site: np.ndarray, k: int
) -> np.ndarray:
    """The ``k`` objects an informed inspector picks: each sample points at the object
    (``labels`` > 0) nearest to it, with its industrial-site Cd ``site``; objects are ranked
    by the largest ``site`` pointing at them. Only objects some enriched sample (``site`` >
    0) points at are picked, so there may be fewer than ``k``. Samples off the grid are left
    out. Returns object labels, strongest first.

    >>> labels = np.array([[1, 0, 0, 2], [1, 0, 0, 2], [0, 0, 0, 3]])
    >>> informed_picks(labels, np.array([0, 1, 2]), np.array([1, 2, 2]),
    ...                np.array([0.2, 0.5, 0.0]), k=3).tolist()
    [2, 1]
    """
    inside = (rows >= 0) & (rows < labels.shape[0]) & (cols >= 0) & (cols < labels.shape[1])
    rows, cols, site = rows[inside], cols[inside], np.asarray(site, float)[inside]
    if not labels.any() or not rows.size:
        return np.zeros(0, np.int64)
    _, (near_r, near_c) = ndimage.distance_transform_edt(labels == 0, return_indices=True)
    pointed = labels[near_r[rows, cols], near_c[rows, cols]]
    best = np.zeros(int(labels.max()) + 1)
    np.maximum.at(best, pointed, np.where(site > 0, site, 0.0))
    order = np.argsort(-best[1:], kind="stable")[:k] + 1
    return order[best[order] > 0]
