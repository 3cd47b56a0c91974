"""Honest evaluation: spatial block cross-validation, ROC AUC with a bootstrap interval.

Neighbouring soil samples share their surroundings, so a random split puts almost the
same patch in training and test and reports an optimistic AUC. The default here is
**spatial block k-fold**: the plane is cut into square blocks of ``block_m`` metres
(anchored at the CRS origin, so the blocks do not depend on which samples exist), a
block is never split between folds, and blocks are assigned to folds so that folds
are balanced in samples and in positives as far as blocks allow
(:class:`~sklearn.model_selection.StratifiedGroupKFold`, seeded).

Choice of ``block_m``: at least the patch side (the configuration's default), so a
test patch lies mostly outside the training blocks. Blocks alone do not guarantee
that no test patch overlaps a training patch: a training sample just across a block
edge has an overlapping patch. ``buffer_m`` removes, per fold, the training samples
within that (Chebyshev) distance of a test sample of the same region; with
``buffer_m`` = patch side no test patch overlaps a training patch, at the price of
fewer training samples. :attr:`CVResult.overlap_share` reports how many test
samples still share pixels with a training patch when ``patch_m`` is given.

``cv="random"`` (stratified random k-fold) is there for comparison; the result is
marked ``optimistic``.

AUC is reported only with at least :data:`MIN_POSITIVES` positives and
:data:`MIN_NEGATIVES` negatives: with fewer, a single sample moves the AUC by 0.05 or
more and the interval spans most of [0, 1], so the number is null with a reason.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
from scipy.spatial import cKDTree
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from torch import nn

from soilsource.errors import InputError
from soilsource.progress import track, warn
from soilsource.training import (
    PatchEstimator,
    TorchPatchClassifier,
    TrainSettings,
    derive_seed,
)

__all__ = [
    "MIN_NEGATIVES",
    "MIN_POSITIVES",
    "AUCResult",
    "CVResult",
    "FoldCheckpoint",
    "block_ids",
    "bootstrap_auc",
    "cross_validate",
    "cross_validate_by_region",
    "make_folds",
    "random_folds",
    "roc_auc",
    "spatial_folds",
]

MIN_POSITIVES = 5
MIN_NEGATIVES = 5
N_BOOTSTRAP = 2000
ALL = "all"
"""Region name used when no regions are given."""

Factory = Callable[[], "nn.Module | PatchEstimator"]


# --- AUC with a bootstrap interval ------------------------------------------------------------


@dataclass(frozen=True)
class AUCResult:
    """ROC AUC of out-of-fold probabilities, or None with the reason."""

    n: int
    n_pos: int
    auc: float | None
    ci95: tuple[float, float] | None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``metrics.json`` fields: n, n_pos, auc, auc_ci95, and auc_null_reason."""
        out: dict[str, Any] = {
            "n": self.n,
            "n_pos": self.n_pos,
            "auc": self.auc,
            "auc_ci95": list(self.ci95) if self.ci95 else None,
        }
        if self.reason:
            out["auc_null_reason"] = self.reason
        return out


def bootstrap_auc(
    labels: np.ndarray, proba: np.ndarray, *, n_boot: int = N_BOOTSTRAP, seed: int = 0
) -> np.ndarray:
    """AUCs of ``n_boot`` stratified resamples (positives and negatives resampled apart).

    Resampling within each class keeps every resample's class balance, so each has an
    AUC. Each AUC is the Mann-Whitney statistic (ties count one half, as in
    ``roc_auc_score``), computed for all resamples at once from the resample counts.

    >>> y = np.array([0, 0, 0, 1, 1, 1]); p = np.array([.1, .4, .35, .8, .3, .9])
    >>> aucs = bootstrap_auc(y, p, n_boot=500, seed=0)
    >>> aucs.shape, bool(((aucs >= 0) & (aucs <= 1)).all())
    ((500,), True)
    """
    labels = np.asarray(labels).astype(bool)
    proba = np.asarray(proba, dtype=np.float64)
    pos, neg = proba[labels], proba[~labels]
    if pos.size == 0 or neg.size == 0:
        raise ValueError("bootstrap_auc needs both classes")
    # kernel[i, j] = 1 if positive i outranks negative j, 1/2 on a tie
    kernel = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    rng = np.random.default_rng(seed)
    w_pos = rng.multinomial(pos.size, np.full(pos.size, 1.0 / pos.size), size=n_boot)
    w_neg = rng.multinomial(neg.size, np.full(neg.size, 1.0 / neg.size), size=n_boot)
    return np.einsum("bi,ij,bj->b", w_pos, kernel, w_neg) / (pos.size * neg.size)


def roc_auc(
    labels: np.ndarray,
    proba: np.ndarray,
    *,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
    min_pos: int = MIN_POSITIVES,
    min_neg: int = MIN_NEGATIVES,
) -> AUCResult:
    """ROC AUC (``sklearn.metrics.roc_auc_score``) with a stratified bootstrap 95 % interval.

    Null, with the reason, for one class, too few of a class, or missing probabilities.

    >>> roc_auc(np.array([0, 0, 1]), np.array([.2, .3, .9])).reason
    'too few samples of a class: 1 positive, 2 negative (minimum 5 and 5)'
    """
    labels = np.asarray(labels).astype(int)
    proba = np.asarray(proba, dtype=np.float64)
    n, n_pos = len(labels), int(labels.sum())
    n_neg = n - n_pos

    def null(reason: str) -> AUCResult:
        return AUCResult(n=n, n_pos=n_pos, auc=None, ci95=None, reason=reason)

    if n_pos == 0 or n_neg == 0:
        return null(f"one class only: {n_pos} positive of {n}")
    if n_pos < min_pos or n_neg < min_neg:
        return null(
            f"too few samples of a class: {n_pos} positive, {n_neg} negative "
            f"(minimum {min_pos} and {min_neg})"
        )
    if not np.isfinite(proba).all():
        return null(f"no out-of-fold prediction for {int((~np.isfinite(proba)).sum())} samples")
    auc = float(roc_auc_score(labels, proba))
    boot = bootstrap_auc(labels, proba, n_boot=n_boot, seed=seed)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return AUCResult(n=n, n_pos=n_pos, auc=auc, ci95=(float(lo), float(hi)))


# --- folds ------------------------------------------------------------------------------------


def block_ids(xy: np.ndarray, block_m: float, regions: np.ndarray | None = None) -> np.ndarray:
    """Integer id of the ``block_m`` square (anchored at the CRS origin) holding each sample.

    Samples of different regions never share a block, even with equal coordinates.

    >>> block_ids(np.array([[10., 10.], [90., 20.], [110., 10.]]), 100.0).tolist()
    [0, 0, 1]
    """
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"xy must be (N, 2), got {xy.shape}")
    if not block_m > 0:
        raise ValueError(f"block_m must be positive, got {block_m}")
    if not np.isfinite(xy).all():
        raise ValueError("xy has missing or infinite coordinates")
    cells = np.floor(xy / block_m).astype(np.int64)
    keys = [cells[:, 0], cells[:, 1]]
    if regions is not None:
        keys.insert(0, np.unique(np.asarray(regions), return_inverse=True)[1])
    _, ids = np.unique(np.stack(keys, axis=1), axis=0, return_inverse=True)
    return ids.reshape(-1)


def _strata(labels: np.ndarray, regions: np.ndarray | None) -> np.ndarray:
    """Stratification classes: label, or (region, label) when pooling regions."""
    labels = np.asarray(labels).astype(int)
    if regions is None:
        return labels
    return np.unique(np.asarray(regions), return_inverse=True)[1].reshape(-1) * 2 + labels


def spatial_folds(
    labels: np.ndarray,
    xy: np.ndarray,
    *,
    block_m: float,
    folds: int = 5,
    seed: int = 0,
    regions: np.ndarray | None = None,
) -> np.ndarray:
    """Fold id (0..k-1) per sample; whole blocks per fold, balanced in samples and positives.

    With fewer blocks than ``folds`` the number of folds drops to the number of blocks
    (with a warning); a single block is an :class:`InputError`.

    >>> rng = np.random.default_rng(0)
    >>> xy = rng.uniform(0, 1000, size=(200, 2)); y = (xy[:, 0] > 600).astype(int)
    >>> f = spatial_folds(y, xy, block_m=200.0, folds=5, seed=0)
    >>> sorted(set(f.tolist()))
    [0, 1, 2, 3, 4]
    """
    groups = block_ids(xy, block_m, regions)
    n_blocks = int(groups.max()) + 1 if len(groups) else 0
    if n_blocks < 2:
        raise InputError(
            "train",
            "block_m",
            f"all {len(groups)} samples fall in one {block_m:g} m block; "
            "use smaller blocks or cv: random",
        )
    if n_blocks < folds:
        warn(f"only {n_blocks} spatial blocks of {block_m:g} m: using {n_blocks} folds")
        folds = n_blocks
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    return _fold_ids(splitter, labels, regions, groups)


def random_folds(
    labels: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    regions: np.ndarray | None = None,
) -> np.ndarray:
    """Stratified random fold ids: optimistic for spatial data (neighbours leak).

    >>> random_folds(np.array([0, 1] * 5), folds=5, seed=0).tolist().count(0)
    2
    """
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return _fold_ids(splitter, labels, regions, None)


def _fold_ids(
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


def make_folds(
    labels: np.ndarray,
    xy: np.ndarray | None = None,
    *,
    cv: Literal["spatial", "random"] = "spatial",
    folds: int = 5,
    block_m: float | None = None,
    seed: int = 0,
    regions: np.ndarray | None = None,
) -> np.ndarray:
    """Fold ids for ``cv="spatial"`` (needs ``xy`` and ``block_m``) or ``cv="random"``."""
    labels = np.asarray(labels)
    if folds < 2:
        raise InputError("train", "folds", f"must be at least 2, got {folds}")
    if len(labels) < folds:
        raise InputError("train", "folds", f"{folds} folds but only {len(labels)} samples")
    if cv == "random":
        return random_folds(labels, folds=folds, seed=seed, regions=regions)
    if cv != "spatial":
        raise InputError("train", "cv", f"must be spatial or random, got {cv!r}")
    if xy is None or block_m is None:
        raise ValueError("spatial cross-validation needs xy and block_m")
    return spatial_folds(labels, xy, block_m=block_m, folds=folds, seed=seed, regions=regions)


def _near(
    xy: np.ndarray, regions: np.ndarray, query: np.ndarray, ref: np.ndarray, dist_m: float
) -> np.ndarray:
    """Whether each ``query`` sample has a ``ref`` sample of its region closer than
    ``dist_m`` in both x and y (Chebyshev distance; square patches overlap exactly then)."""
    out = np.zeros(len(query), dtype=bool)
    for region in np.unique(regions[query]):
        in_region = regions[query] == region
        r = ref[regions[ref] == region]
        if len(r) == 0:
            continue
        d, _ = cKDTree(xy[r]).query(xy[query[in_region]], k=1, p=np.inf)
        out[in_region] = d < dist_m
    return out


# --- cross-validation -------------------------------------------------------------------------


@dataclass
class CVResult:
    """Out-of-fold probabilities, fold ids, AUC per region, and the final model.

    ``proba`` is NaN and ``fold`` is -1 for samples that were not predicted (a region
    with one class is not trained). ``optimistic`` is True for random CV.
    """

    proba: np.ndarray
    fold: np.ndarray
    regions: dict[str, AUCResult]
    overall: AUCResult
    final: Any
    cv: str
    folds: int
    block_m: float | None
    buffer_m: float
    seed: int
    optimistic: bool
    overlap_share: float | None = None
    fold_info: list[dict[str, Any]] = field(default_factory=list)

    def metrics(self) -> dict[str, Any]:
        """Per-region AUC entries and the overall entry, as in ``metrics.json``."""
        return {
            "regions": {name: r.to_dict() for name, r in self.regions.items()},
            "overall": {
                **self.overall.to_dict(),
                "cv": self.cv,
                "optimistic": self.optimistic,
                "folds": self.folds,
                "block_m": self.block_m,
                "buffer_m": self.buffer_m,
                "overlap_share": self.overlap_share,
            },
        }


class FoldCheckpoint(Protocol):
    """Where :func:`cross_validate` keeps finished folds, so that a killed run resumes.

    :class:`soilsource.resume.FoldStore` keeps them in the run directory. A fold's
    result is its test samples' probabilities; ``test`` (the indices) lets the store
    refuse a checkpoint of different folds.
    """

    def load_fold(self, k: int, test: np.ndarray) -> tuple[np.ndarray, dict[str, Any]] | None:
        """Probabilities of fold ``k``'s test samples and its info, or None if not done."""

    def save_fold(self, k: int, test: np.ndarray, proba: np.ndarray, info: dict) -> None:
        """Keep fold ``k``'s result."""

    def load_final(self) -> PatchEstimator | None:
        """The final model trained on every sample, or None if not done."""

    def save_final(self, model: PatchEstimator) -> None:
        """Keep the final model."""


def _estimator(
    factory: Factory,
    settings: TrainSettings | None,
    device: str | torch.device,
    num_threads: int | None,
) -> PatchEstimator:
    model = factory()
    if isinstance(model, nn.Module):
        return TorchPatchClassifier(
            model, settings=settings, device=device, num_threads=num_threads
        )
    if not (hasattr(model, "fit") and hasattr(model, "predict_proba")):
        raise TypeError(f"factory returned {type(model).__name__}: not a module or estimator")
    return model


def _fit_one(
    factory: Factory,
    patches: np.ndarray,
    labels: np.ndarray,
    groups: np.ndarray | None,
    seed: int,
    options: dict[str, Any],
) -> PatchEstimator:
    torch.manual_seed(seed)  # the factory's initial weights
    model = _estimator(factory, **options)
    return model.fit(patches, labels, groups=groups, seed=seed)


def cross_validate(
    factory: Factory,
    patches: np.ndarray,
    labels: np.ndarray,
    xy: np.ndarray | None = None,
    regions: Sequence[str] | np.ndarray | None = None,
    *,
    folds: int = 5,
    cv: Literal["spatial", "random"] = "spatial",
    block_m: float | None = None,
    buffer_m: float = 0.0,
    patch_m: float | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    settings: TrainSettings | None = None,
    num_threads: int | None = None,
    final: bool = True,
    n_boot: int = N_BOOTSTRAP,
    description: str = "cross-validation",
    checkpoint: FoldCheckpoint | None = None,
) -> CVResult:
    """K-fold cross-validation of one model factory, then a final model on all samples.

    All samples given are one scope: pass one region's samples for per-region models
    (scope ``region``), or all regions with ``regions`` for one pooled model; AUC is
    reported per region either way, and over all samples in ``overall``.

    Parameters
    ----------
    factory:
        Zero-argument callable returning a fresh untrained ``nn.Module`` (wrapped in
        :class:`~soilsource.training.TorchPatchClassifier` with ``settings`` and
        ``device``) or a :class:`~soilsource.training.PatchEstimator`. Torch is seeded
        before each call, so initial weights are repeatable.
    patches, labels:
        (N, C, H, H) float32 patches as the models take them (normalised for a bare
        module; physical with NaN for nodata for ``Standardized`` and the forest), and
        0/1 labels (N,).
    xy:
        (N, 2) sample coordinates in metres (a projected CRS); needed for spatial CV.
    regions:
        Region name per sample; None = one region, reported as ``"all"``.
    folds, cv, block_m:
        Number of folds, ``"spatial"`` (blocks of ``block_m`` metres) or ``"random"``.
    buffer_m:
        Drop from each fold's training set the samples closer than this to a test
        sample of the same region (Chebyshev distance); 0 = none.
    patch_m:
        Patch side in metres; when given, :attr:`CVResult.overlap_share` is computed.
    seed:
        One seed for folds, initial weights, training and the bootstrap: the same seed
        gives bit-identical out-of-fold probabilities on the same machine. Fold ``k``
        trains with ``derive_seed(seed, k)`` (the final model with ``k = folds``) and
        torch is re-seeded before each fit, so a fold's result depends on the seed and
        its samples only, not on what ran before it in the process (what makes
        ``checkpoint`` resumption exact).
    device, settings, num_threads:
        For torch models (see :func:`soilsource.training.fit`).
    final:
        Also train the final model on all samples (``CVResult.final``).
    n_boot:
        Bootstrap resamples for the AUC interval.
    description:
        Progress bar label, e.g. the region and model.
    checkpoint:
        Finished folds and the final model are taken from it instead of trained, and
        each newly trained one is given to it (see :class:`FoldCheckpoint`).
    """
    labels = np.asarray(labels).astype(int)
    n = len(labels)
    if patches.shape[0] != n:
        raise ValueError(f"{patches.shape[0]} patches but {n} labels")
    region_arr = np.asarray([ALL] * n if regions is None else regions).astype(str)
    coords = None if xy is None else np.asarray(xy, dtype=np.float64)
    result = CVResult(
        proba=np.full(n, np.nan),
        fold=np.full(n, -1, dtype=np.int64),
        regions={},
        overall=roc_auc(labels, np.full(n, np.nan)),
        final=None,
        cv=cv,
        folds=folds,
        block_m=block_m if cv == "spatial" else None,
        buffer_m=float(buffer_m),
        seed=seed,
        optimistic=cv == "random",
    )
    if _one_class(labels):
        warn(f"{description}: one class only ({int(labels.sum())} positive of {n}); not trained")
        return _score(result, labels, region_arr, n_boot)

    strata_regions = None if regions is None else region_arr
    result.fold = make_folds(
        labels, coords, cv=cv, folds=folds, block_m=block_m, seed=seed, regions=strata_regions
    )
    result.folds = int(result.fold.max()) + 1
    groups = block_ids(coords, block_m, region_arr) if cv == "spatial" else None
    overlapping = np.zeros(n, dtype=bool)
    options = {"settings": settings, "device": device, "num_threads": num_threads}

    steps = [*range(result.folds), *([result.folds] if final else [])]
    for k in track(steps, description):
        start = time.perf_counter()
        if k == result.folds:  # the final model, on every sample
            result.final = checkpoint.load_final() if checkpoint else None
            if result.final is None:
                seed_k = derive_seed(seed, k)
                result.final = _fit_one(factory, patches, labels, groups, seed_k, options)
                if checkpoint:
                    checkpoint.save_final(result.final)
            result.fold_info.append({"fold": "final", "n_train": n, "seconds": _since(start)})
            continue
        test = np.flatnonzero(result.fold == k)
        train = np.flatnonzero(result.fold != k)
        dropped = 0
        if buffer_m > 0 and coords is not None:
            near = _near(coords, region_arr, train, test, buffer_m)
            dropped, train = int(near.sum()), train[~near]
        if patch_m is not None and coords is not None:
            overlapping[test] = _near(coords, region_arr, test, train, patch_m)
        info = {"fold": k, "n_train": len(train), "n_test": len(test), "dropped_by_buffer": dropped}
        done = checkpoint.load_fold(k, test) if checkpoint else None
        if done is not None:
            result.proba[test] = done[0]
            result.fold_info.append({**done[1], "from_checkpoint": True})
            continue
        if _one_class(labels[train]):
            warn(f"{description}: fold {k} has one class in training; predicting its share")
            result.proba[test] = labels[train].mean() if len(train) else np.nan
        else:
            model = _fit_one(
                factory,
                patches[train],
                labels[train],
                None if groups is None else groups[train],
                derive_seed(seed, k),
                options,
            )
            result.proba[test] = model.predict_proba(patches[test])
            fit_result = getattr(model, "fit_result_", None)
            if fit_result is not None:
                info.update(best_epoch=fit_result.best_epoch, epochs=fit_result.epochs_run)
        result.fold_info.append({**info, "seconds": _since(start)})
        if checkpoint:
            checkpoint.save_fold(k, test, result.proba[test], result.fold_info[-1])

    if patch_m is not None and coords is not None:
        result.overlap_share = float(overlapping.mean())
    return _score(result, labels, region_arr, n_boot)


def _one_class(labels: np.ndarray) -> bool:
    return labels.size == 0 or labels.min() == labels.max()


def _since(start: float) -> float:
    return round(time.perf_counter() - start, 3)


def _score(result: CVResult, labels: np.ndarray, regions: np.ndarray, n_boot: int) -> CVResult:
    boot_seed = derive_seed(result.seed, 10_000)
    for name in dict.fromkeys(regions.tolist()):  # first-seen order
        sel = regions == name
        result.regions[name] = roc_auc(
            labels[sel], result.proba[sel], n_boot=n_boot, seed=boot_seed
        )
    result.overall = roc_auc(labels, result.proba, n_boot=n_boot, seed=boot_seed)
    return result


def cross_validate_by_region(
    factory: Factory,
    patches: np.ndarray,
    labels: np.ndarray,
    xy: np.ndarray | None,
    regions: Sequence[str] | np.ndarray,
    **kwargs: Any,
) -> dict[str, CVResult]:
    """Scope ``region``: :func:`cross_validate` on each region's samples separately.

    Keyword arguments go to :func:`cross_validate`; the progress label names the region.
    """
    region_arr = np.asarray(regions).astype(str)
    label = kwargs.pop("description", "folds")
    out = {}
    for name in dict.fromkeys(region_arr.tolist()):
        sel = np.flatnonzero(region_arr == name)
        out[name] = cross_validate(
            factory,
            patches[sel],
            np.asarray(labels)[sel],
            None if xy is None else np.asarray(xy)[sel],
            region_arr[sel],
            description=f"{name}: {label}",
            **kwargs,
        )
    return out
