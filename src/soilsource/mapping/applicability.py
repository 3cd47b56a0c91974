"""Area of applicability: where the model's maps can be trusted, and where they extrapolate.

Implemented from Meyer & Pebesma (2021), "Predicting into unknown space? Estimating the area
of applicability of spatial prediction models", Methods in Ecology and Evolution 12:1620
(written from the paper; no code of the CAST package is used):

- **Predictor space.** For SI-LICNet, the ring-pooled features the head reads
  (:meth:`~soilsource.models.SILICNet.pooled`), standardised by the training samples'
  mean and standard deviation. The paper weights predictors by their importance; the
  network gives none, so every feature weighs the same (the paper's unweighted case).
- ``d_bar``: the mean distance between all pairs of training samples in that space.
- **Dissimilarity index** of a location: the distance from its features to the nearest
  training sample's, divided by ``d_bar``.
- **Threshold, from the cross-validation.** Each training sample's DI is taken to the
  nearest training sample *outside its own fold* (what that sample's fold model saw). The
  threshold is the largest training DI that is not an outlier, i.e. not above the 75th
  percentile plus 1.5 times the interquartile range (the upper whisker of a box plot, as
  in the paper). A location is inside the area of applicability when its DI is at most the
  threshold.

``applicability/REGION.tif`` holds the DI (float32, NaN where no patch fits) on the
imagery grid with the threshold in the tag ``AOA_THRESHOLD``, a Cloud-Optimised GeoTIFF
with its QGIS style beside it (:mod:`soilsource.gisout`). The DI is computed for
patches centred every ``stride_px`` pixels and each value fills its ``stride_px`` square
(the maps' features change over a patch side, not a pixel).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import rasterio
import torch
from scipy.spatial.distance import pdist
from sklearn.metrics import pairwise_distances_argmin

from soilsource.atomic import atomic_path
from soilsource.data.patches import BandStats, PatchesLike, read_windows
from soilsource.gisout import RasterStyle, cog_path
from soilsource.inputs import RasterInfo
from soilsource.mapping.probability import map_profile
from soilsource.models.silicnet import SILICNet
from soilsource.progress import track

__all__ = [
    "Applicability",
    "dissimilarity",
    "mean_distance",
    "nearest_distance",
    "pooled_features",
    "threshold",
    "write_applicability",
]

TAG = "AOA_THRESHOLD"
MAX_POINTS = 40_000
"""Most patches evaluated for one map: the stride grows with the region."""


class Applicability:
    """The training samples' standardised features, ``d_bar``, their CV DI and threshold.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> train = rng.normal(size=(60, 4)); folds = np.arange(60) % 3
    >>> aoa = Applicability(train, folds)
    >>> bool(aoa.di(train[:1] + 0.01)[0] <= aoa.threshold)
    True
    >>> bool(aoa.di(train[:1] + 50.0)[0] > aoa.threshold)
    True
    """

    def __init__(self, features: np.ndarray, folds: np.ndarray) -> None:
        features = np.asarray(features, np.float64)
        if len(features) < 2:
            raise ValueError("the area of applicability needs at least two training samples")
        self.features, self.folds = features, np.asarray(folds, np.int64)
        self.mean = features.mean(axis=0)
        sd = features.std(axis=0)
        self.sd = np.where(sd > 0, sd, 1.0)
        self.train = (features - self.mean) / self.sd
        self.d_bar = mean_distance(self.train) or 1.0
        self.training_di = _cv_di(self.train, np.asarray(folds), self.d_bar)
        self.threshold = threshold(self.training_di)

    def di(self, features: np.ndarray) -> np.ndarray:
        """Dissimilarity index of new feature vectors ``(M, D)``."""
        return dissimilarity(features, self)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the training features and folds (``.npz``, no pickle), atomically: what
        ``soilsource predict`` needs to map the area of applicability on new imagery."""
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, features=self.features, folds=self.folds)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Applicability:
        """The :class:`Applicability` :meth:`save` wrote: the same threshold and ``d_bar``
        (both are computed again from the same arrays)."""
        with np.load(path, allow_pickle=False) as saved:
            return cls(saved["features"], saved["folds"])


EXACT_PAIRS_MAX = 4000
"""Up to this many training samples ``d_bar`` averages every pair (8 million pairs, 64 MB);
beyond, :data:`SAMPLED_PAIRS` random pairs: all pairs of 20,000 samples would be 1.6 GB."""
SAMPLED_PAIRS = 2_000_000
PAIR_CHUNK_VALUES = 2_097_152
"""Feature values per chunk of pairs: 16 MB per float64 temporary, whatever the features."""


def mean_distance(train: np.ndarray, seed: int = 0) -> float:
    """``d_bar``: the mean distance between training samples in feature space.

    Exact up to :data:`EXACT_PAIRS_MAX` samples; beyond, the mean over
    :data:`SAMPLED_PAIRS` pairs drawn at random (fixed ``seed``), whose relative standard
    error is below 0.1 % for any spread of distances with a coefficient of variation
    under 1.4, so the DI and its threshold move by less than that.

    >>> rng = np.random.default_rng(1); x = rng.normal(size=(5000, 3))
    >>> round(mean_distance(x), 3), round(float(np.mean(pdist(x))), 3)  # sampled vs all pairs
    (2.249, 2.248)
    """
    n = len(train)
    if n <= EXACT_PAIRS_MAX:
        return float(np.mean(pdist(train)))
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n, SAMPLED_PAIRS)
    j = (i + rng.integers(1, n, SAMPLED_PAIRS)) % n  # never i itself
    total = 0.0
    chunk = max(1024, PAIR_CHUNK_VALUES // train.shape[1])  # 576 features: 3,640 pairs
    for start in range(0, SAMPLED_PAIRS, chunk):
        a, b = i[start : start + chunk], j[start : start + chunk]
        total += float(np.linalg.norm(train[a] - train[b], axis=1).sum())
    return total / SAMPLED_PAIRS


def _cv_di(train: np.ndarray, folds: np.ndarray, d_bar: float) -> np.ndarray:
    """Each training sample's distance to the nearest training sample outside its fold."""
    di = np.full(len(train), np.nan)
    for fold in np.unique(folds):
        inside = folds == fold
        others = train[~inside]
        if len(others) == 0:
            continue
        di[inside] = nearest_distance(train[inside], others) / d_bar
    return di


def threshold(training_di: np.ndarray) -> float:
    """The largest training DI that is not an outlier (at most Q75 + 1.5 IQR).

    >>> threshold(np.array([0.1, 0.2, 0.2, 0.3, 0.3, 0.4, 5.0]))
    0.4
    """
    di = np.asarray(training_di, np.float64)
    di = di[np.isfinite(di)]
    if di.size == 0:
        return math.nan
    q25, q75 = np.percentile(di, [25, 75])
    return float(di[di <= q75 + 1.5 * (q75 - q25)].max())


def dissimilarity(features: np.ndarray, aoa: Applicability) -> np.ndarray:
    """DI of feature vectors: distance to the nearest training sample over ``d_bar``."""
    scaled = (np.asarray(features, np.float64) - aoa.mean) / aoa.sd
    return nearest_distance(scaled, aoa.train) / aoa.d_bar


def nearest_distance(query: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Euclidean distance from each row of ``query`` to its nearest row of ``train``.

    The features are SILICNet's ring-pooled channels (576 of them by default), where a
    k-d tree degrades to slower than brute force (20,000 training samples: minutes per
    map). scikit-learn's chunked, threaded brute-force search finds the nearest row;
    the distance to it is then computed directly, so it is exact, not the rounding of
    the ``|a|^2 - 2ab + |b|^2`` expansion the search uses.

    >>> train = np.array([[0.0, 0.0], [3.0, 4.0]])
    >>> nearest_distance(np.array([[3.0, 5.0], [0.5, 0.0]]), train).tolist()
    [1.0, 0.5]
    """
    if len(query) == 0:
        return np.zeros(0)
    nearest = pairwise_distances_argmin(query, train)
    return np.linalg.norm(query - train[nearest], axis=1)


def pooled_features(model: SILICNet, x: PatchesLike, batch: int = 256) -> np.ndarray:
    """The ring-pooled features ``(N, D)`` of normalised patches ``(N, C, S, S)``."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(x), batch):
            part = torch.from_numpy(np.ascontiguousarray(x[start : start + batch]))
            out.append(model.pooled(part).double().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


def write_applicability(
    path: str | os.PathLike[str],
    model: SILICNet,
    stats: BandStats,
    raster: RasterInfo,
    aoa: Applicability,
    *,
    stride_px: int | None = None,
    max_nodata_share: float = 0.5,
    progress: bool = True,
    model_text: str = "",
    rule_text: str = "",
) -> Path:
    """Write the DI of one raster as a float32 GeoTIFF with ``AOA_THRESHOLD``, atomically.

    Patches are centred every ``stride_px`` pixels (default: a quarter patch, or more so
    that at most :data:`MAX_POINTS` are evaluated); a patch with more than
    ``max_nodata_share`` of nodata gets NaN, as on the probability map. ``model_text`` and
    ``rule_text`` go into the ``MODEL`` and ``RULE`` tags (:mod:`soilsource.gisout`).
    """
    size = model.patch_px
    if stride_px is None:
        stride_px = max(size // 4, math.ceil(math.sqrt(raster.height * raster.width / MAX_POINTS)))
    rows = np.arange(stride_px // 2, raster.height, stride_px)
    cols = np.arange(stride_px // 2, raster.width, stride_px)
    grid = np.full((len(rows), len(cols)), np.nan, np.float32)
    steps = range(len(rows))
    for k in track(steps, f"applicability {Path(path).stem}") if progress else steps:
        patches = read_windows(
            raster, np.full(len(cols), rows[k] - size // 2), cols - size // 2, size, threads=1
        )
        features = pooled_features(model, stats.transform(patches))
        di = aoa.di(features)
        di[patches.nodata_share > max_nodata_share] = np.nan
        grid[k] = di
    full = np.repeat(np.repeat(grid, stride_px, axis=0), stride_px, axis=1)
    full = full[: raster.height, : raster.width]
    style = RasterStyle(
        "concentration",
        "dissimilarity index (area of applicability)",
        "1",
        rule=rule_text,
        model=model_text,
    )
    with cog_path(path, style) as tmp, rasterio.open(tmp, "w", **map_profile(raster)) as dst:
        dst.write(full.astype(np.float32), 1)
        dst.set_band_description(1, "dissimilarity index (area of applicability)")
        dst.update_tags(**{TAG: repr(float(aoa.threshold)), "STRIDE_PX": str(stride_px)})
    return Path(path)
