"""Cross-validation fold designs as scikit-learn style splitters: ``split(xy, y, groups)``.

Which samples may test a model trained on which others decides what the AUC means:

- :class:`KNNDM` (the default, ``train.cv: knndm``): k-fold nearest-neighbour distance
  matching (Linnenbrink, Milà, Ludwig & Meyer 2024, *Geosci. Model Dev.* 17:5897). The
  map is drawn over a whole region, most of it farther from a sample than samples are
  from each other. kNNDM chooses folds so that the distances from test samples to their
  nearest training sample (``Gj*``) are distributed like the distances from the places
  to be mapped to their nearest sample (``Gij``): the CV error then estimates the
  error of the map. When the samples already cover the region as densely as the map
  needs (a one-sided Kolmogorov-Smirnov test cannot show ``Gj < Gij`` at 5 %), random
  k-fold is that design, and is used.
- :class:`SpatialBlocks` (``spatial``): whole square blocks per fold, balanced in
  samples and positives; :class:`SpatialBlocks` with ``buffer_m`` (``buffered``) also
  drops, per fold, the training samples whose patches would overlap a test patch: the
  estimate for places far from any sample.
- :class:`RandomKFold` (``random``): stratified random folds, optimistic under spatial
  autocorrelation, for comparison.

Every design gives one fold id per sample (:meth:`fold_ids`), so all models of a run see
the same folds, and describes itself (:meth:`describe`) with the distance statistics a
reader needs to judge it (``metrics.json``, per region, key ``cv``).

Our kNNDM follows the paper's algorithm, written from its description (not from the
CAST R package): Ward hierarchical clustering of the sample coordinates into ``q``
clusters for about 100 values of ``q`` between ``k`` and ``N - 2`` (log-spaced);
clusters of at least ``N / k`` samples are folds of their own, the others are taken in
a seeded random order and merged into the remaining folds by cumulative size; designs
with a fold over ``maxp`` (0.5) of the samples are rejected; the design with the
smallest Wasserstein distance ``W(Gj*, Gij)`` wins. Few clusters give compact,
far-apart folds (large ``Gj*``), many small clusters merged at random approach random
k-fold (small ``Gj*``), so the search spans the range the prediction area may need.
Above :data:`MAX_WARD` samples the Ward tree is built on k-means centroids (an
approximation we chose for memory: Ward on N points needs N^2 / 2 distances).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial import cKDTree
from scipy.stats import ks_2samp, wasserstein_distance
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from soilsource.errors import InputError
from soilsource.progress import warn

__all__ = [
    "KNNDM",
    "MAX_WARD",
    "FoldDesign",
    "RandomKFold",
    "SpatialBlocks",
    "block_ids",
    "nearest_other_fold",
]

MAX_WARD = 3000
"""Most samples clustered directly by Ward; above, Ward runs on k-means centroids."""

QUANTILES = (5, 25, 50, 75, 95)


def block_ids(xy: np.ndarray, block_m: float, regions: np.ndarray | None = None) -> np.ndarray:
    """Integer id of the ``block_m`` square (anchored at the CRS origin) holding each sample.

    Samples of different regions never share a block, even with equal coordinates.

    >>> block_ids(np.array([[10., 10.], [90., 20.], [110., 10.]]), 100.0).tolist()
    [0, 0, 1]
    """
    xy = _xy(xy)
    if not block_m > 0:
        raise ValueError(f"block_m must be positive, got {block_m}")
    cells = np.floor(xy / block_m).astype(np.int64)
    keys = [cells[:, 0], cells[:, 1]]
    if regions is not None:
        keys.insert(0, np.unique(np.asarray(regions), return_inverse=True)[1])
    _, ids = np.unique(np.stack(keys, axis=1), axis=0, return_inverse=True)
    return ids.reshape(-1)


def nearest_other_fold(xy: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Distance from each sample to the nearest sample of another fold (``Gj*``), metres.

    >>> nearest_other_fold(np.array([[0., 0.], [1., 0.], [5., 0.]]), np.array([0, 0, 1])).tolist()
    [5.0, 4.0, 4.0]
    """
    xy, fold = _xy(xy), np.asarray(fold)
    out = np.full(len(xy), np.inf)
    for k in np.unique(fold):
        inside = fold == k
        if inside.all():
            continue
        out[inside] = cKDTree(xy[~inside]).query(xy[inside], k=1)[0]
    return out


def _xy(xy: np.ndarray) -> np.ndarray:
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"xy must be (N, 2), got {xy.shape}")
    if not np.isfinite(xy).all():
        raise ValueError("xy has missing or infinite coordinates")
    return xy


def _strata(labels: np.ndarray, regions: np.ndarray | None) -> np.ndarray:
    """Stratification classes: label, or (region, label) when pooling regions."""
    labels = np.asarray(labels).astype(int)
    if regions is None:
        return labels
    return np.unique(np.asarray(regions), return_inverse=True)[1].reshape(-1) * 2 + labels


def _quantiles(d: np.ndarray) -> dict[str, float]:
    d = d[np.isfinite(d)]
    if d.size == 0:
        return {}
    values = np.percentile(d, QUANTILES)
    return {f"q{q}": round(float(v), 1) for q, v in zip(QUANTILES, values, strict=True)}


@dataclass
class FoldDesign:
    """Base of the fold designs: fold ids per sample, ``split`` as in scikit-learn.

    ``fold_ids(xy, y, regions)`` returns one fold id (0..k-1) per sample; ``split``
    yields ``(train, test)`` index arrays from them; :meth:`describe` gives the design
    and its distance statistics after ``fold_ids`` has run.
    """

    n_splits: int = 5
    seed: int = 0
    info_: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    name = "design"
    optimistic = False

    def fold_ids(
        self, xy: np.ndarray | None, y: np.ndarray, regions: np.ndarray | None = None
    ) -> np.ndarray:
        raise NotImplementedError

    def split(
        self, xy: np.ndarray, y: np.ndarray | None = None, groups: np.ndarray | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(train, test)`` indices of each fold; ``groups`` are regions (stratified)."""
        labels = np.zeros(len(xy), dtype=int) if y is None else np.asarray(y)
        fold = self.fold_ids(xy, labels, groups)
        for k in range(int(fold.max()) + 1):
            yield np.flatnonzero(fold != k), np.flatnonzero(fold == k)

    def get_n_splits(self, *_: Any) -> int:
        return self.n_splits

    def describe(self) -> dict[str, Any]:
        """The design and its distance statistics, for ``metrics.json``."""
        return {"design": self.name, **self.info_}

    def _distances(self, xy: np.ndarray | None, fold: np.ndarray) -> None:
        if xy is not None and int(fold.max()) > 0:
            self.info_["test_to_train_m"] = _quantiles(nearest_other_fold(xy, fold))


@dataclass
class RandomKFold(FoldDesign):
    """Stratified random k-fold (by label, and region when pooled): optimistic in space.

    >>> RandomKFold(5).fold_ids(None, np.array([0, 1] * 5)).tolist().count(0)
    2
    """

    name = "random"
    optimistic = True

    def fold_ids(
        self, xy: np.ndarray | None, y: np.ndarray, regions: np.ndarray | None = None
    ) -> np.ndarray:
        splitter = StratifiedKFold(n_splits=self.n_splits, shuffle=True, random_state=self.seed)
        fold = _assign(splitter, y, regions, None)
        self.info_ = {"folds": int(fold.max()) + 1}
        self._distances(xy, fold)
        return fold


@dataclass
class SpatialBlocks(FoldDesign):
    """Whole ``block_m`` squares per fold, balanced in samples and positives.

    With fewer blocks than folds the number of folds drops to the number of blocks (with
    a warning); a single block is an :class:`InputError`. ``buffer_m`` is applied by the
    cross-validation: training samples closer than that to a test sample are dropped
    (``buffered``: ``buffer_m`` = the patch side, so no test patch overlaps a training
    patch).

    >>> rng = np.random.default_rng(0)
    >>> xy = rng.uniform(0, 1000, size=(200, 2)); y = (xy[:, 0] > 600).astype(int)
    >>> sorted(set(SpatialBlocks(5, block_m=200.0).fold_ids(xy, y).tolist()))
    [0, 1, 2, 3, 4]
    """

    block_m: float = 1000.0
    buffer_m: float = 0.0

    @property
    def name(self) -> str:  # type: ignore[override]
        return "buffered" if self.buffer_m > 0 else "spatial"

    def fold_ids(
        self, xy: np.ndarray | None, y: np.ndarray, regions: np.ndarray | None = None
    ) -> np.ndarray:
        if xy is None:
            raise ValueError("spatial cross-validation needs xy")
        groups = block_ids(xy, self.block_m, regions)
        n_blocks = int(groups.max()) + 1 if len(groups) else 0
        if n_blocks < 2:
            raise InputError(
                "train",
                "block_m",
                f"all {len(groups)} samples fall in one {self.block_m:g} m block; "
                "use smaller blocks or cv: random",
            )
        folds = self.n_splits
        if n_blocks < folds:
            warn(f"only {n_blocks} spatial blocks of {self.block_m:g} m: using {n_blocks} folds")
            folds = n_blocks
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=self.seed)
        fold = _assign(splitter, y, regions, groups)
        self.info_ = {
            "folds": int(fold.max()) + 1,
            "block_m": float(self.block_m),
            "buffer_m": float(self.buffer_m),
        }
        self._distances(xy, fold)
        return fold


@dataclass
class KNNDM(FoldDesign):
    """k-fold nearest-neighbour distance matching (Linnenbrink et al. 2024).

    Parameters
    ----------
    prediction_xy:
        Points of the prediction area (where the map is drawn), in the samples' CRS;
        about 1,000 regularly spaced points is the paper's choice
        (:func:`soilsource.inputs.imagery.prediction_points`).
    n_splits:
        ``k``, the number of folds.
    maxp:
        Largest share of the samples one fold may hold.
    n_candidates:
        Cluster counts ``q`` tried, log-spaced between ``k`` and ``N - 2``.

    After :meth:`fold_ids`, :meth:`describe` gives ``method`` (``knndm``, or ``random``
    when the samples already match the prediction area), the quantiles of ``Gij``
    (``prediction_to_sample_m``), ``Gj`` (``sample_to_sample_m``) and ``Gj*``
    (``test_to_train_m``), the Wasserstein distance ``W`` between ``Gj*`` and ``Gij``,
    the KS p-value and the chosen ``q``.

    Examples
    --------
    Clustered samples, a prediction area all around them: folds follow the clusters.

    >>> rng = np.random.default_rng(0)
    >>> centres = rng.uniform(0, 10_000, size=(10, 2))
    >>> xy = (centres[:, None] + rng.normal(0, 100, size=(10, 20, 2))).reshape(-1, 2)
    >>> grid = np.stack(np.meshgrid(np.linspace(0, 1e4, 30), np.linspace(0, 1e4, 30)), -1)
    >>> design = KNNDM(n_splits=5, prediction_xy=grid.reshape(-1, 2))
    >>> fold = design.fold_ids(xy, np.zeros(len(xy), int))
    >>> design.describe()["method"], len(set(fold.tolist()))
    ('knndm', 5)
    """

    prediction_xy: np.ndarray | None = None
    maxp: float = 0.5
    n_candidates: int = 100

    name = "knndm"

    def fold_ids(
        self, xy: np.ndarray | None, y: np.ndarray, regions: np.ndarray | None = None
    ) -> np.ndarray:
        if xy is None or self.prediction_xy is None:
            raise ValueError("kNNDM needs the sample coordinates and the prediction points")
        xy, pred = _xy(xy), _xy(self.prediction_xy)
        n, k = len(xy), self.n_splits
        gij = cKDTree(xy).query(pred, k=1)[0]
        gj = cKDTree(xy).query(xy, k=2)[0][:, 1]
        p_value = float(ks_2samp(gj, gij, alternative="greater").pvalue)
        info: dict[str, Any] = {
            "prediction_points": len(pred),
            "prediction_to_sample_m": _quantiles(gij),
            "sample_to_sample_m": _quantiles(gj),
            "ks_p_value": round(p_value, 4),
        }
        if p_value >= 0.05 or n < k + 3:
            # Sampling already as dense as prediction needs: random k-fold is the match.
            fold = RandomKFold(k, self.seed).fold_ids(None, y, regions)
            info.update(method="random", q=None)
        else:
            fold, q = self._search(xy, gij)
            info.update(method="knndm", q=q)
        gjs = nearest_other_fold(xy, fold)
        info["test_to_train_m"] = _quantiles(gjs)
        info["W"] = round(float(wasserstein_distance(gjs, gij)), 2)
        info["folds"] = int(fold.max()) + 1
        self.info_ = info
        return fold

    def _search(self, xy: np.ndarray, gij: np.ndarray) -> tuple[np.ndarray, int]:
        n, k = len(xy), self.n_splits
        rng = np.random.default_rng(self.seed)
        members, tree = _ward_tree(xy, self.seed)
        top = min(n - 2, len(tree) + 1)
        qs = np.unique(np.round(np.geomspace(k, max(top, k), self.n_candidates)).astype(int))
        best: tuple[float, np.ndarray, int] | None = None
        for q in qs:
            clusters = fcluster(tree, t=q, criterion="maxclust")[members] - 1
            fold = _merge_clusters(clusters, k, rng)
            sizes = np.bincount(fold, minlength=k)
            if (sizes == 0).any() or sizes.max() > self.maxp * n:
                continue
            w = wasserstein_distance(nearest_other_fold(xy, fold), gij)
            if best is None or w < best[0]:
                best = (w, fold, int(q))
        if best is None:  # every design had a fold over maxp: fall back to random
            warn("kNNDM found no design with every fold under maxp; using random folds")
            return RandomKFold(k, self.seed).fold_ids(None, np.zeros(n, int)), 0
        return best[1], best[2]


def _ward_tree(xy: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Ward linkage of the samples (or of k-means centroids above :data:`MAX_WARD`).

    Returns the index of each sample's leaf and the linkage matrix.
    """
    if len(xy) <= MAX_WARD:
        return np.arange(len(xy)), linkage(xy, method="ward")
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(MAX_WARD, random_state=seed, n_init=1, batch_size=4096).fit(xy)
    return km.labels_, linkage(km.cluster_centers_, method="ward")


def _merge_clusters(clusters: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k folds from cluster ids: big clusters alone, the rest merged in random order."""
    n = len(clusters)
    sizes = np.bincount(clusters)
    ids = np.flatnonzero(sizes)
    big = ids[sizes[ids] >= n / k][:k]
    fold_of = np.full(len(sizes), -1)
    fold_of[big] = np.arange(len(big))
    rest = rng.permutation(np.setdiff1d(ids, big))
    free = k - len(big)
    if free > 0 and len(rest):
        remaining = sizes[rest].sum()
        before = np.cumsum(sizes[rest]) - sizes[rest]
        fold_of[rest] = len(big) + np.minimum((before * free) // remaining, free - 1)
    elif len(rest):  # k big clusters already: the rest join the smallest folds
        load = np.bincount(fold_of[big], weights=sizes[big], minlength=k)
        for c in rest:
            fold_of[c] = int(np.argmin(load))
            load[fold_of[c]] += sizes[c]
    return fold_of[clusters]


def _assign(
    splitter: StratifiedGroupKFold | StratifiedKFold,
    labels: np.ndarray,
    regions: np.ndarray | None,
    groups: np.ndarray | None,
) -> np.ndarray:
    strata = _strata(labels, regions)
    fold = np.full(len(strata), -1, dtype=np.int64)
    with warnings.catch_warnings():
        # a stratum (a region's positives) smaller than k is spread as far as it goes
        warnings.simplefilter("ignore", UserWarning)
        for k, (_, test) in enumerate(splitter.split(strata, strata, groups)):
            fold[test] = k
    return fold
