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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
from scipy.spatial import cKDTree
from sklearn.metrics import roc_auc_score
from torch import nn

from soilsource.data.target import Target
from soilsource.errors import InputError
from soilsource.learn.folds import KNNDM, FoldDesign, RandomKFold, SpatialBlocks, block_ids
from soilsource.learn.training import (
    PatchEstimator,
    TorchPatchClassifier,
    TrainSettings,
    derive_seed,
)
from soilsource.progress import track, warn

__all__ = [
    "MIN_NEGATIVES",
    "MIN_POSITIVES",
    "AUCResult",
    "CVResult",
    "FoldCheckpoint",
    "block_ids",
    "bootstrap_auc",
    "brier_score",
    "cross_validate",
    "cross_validate_by_region",
    "fold_design",
    "make_folds",
    "paired_auc_difference",
    "random_folds",
    "roc_auc",
    "spatial_folds",
]

MIN_POSITIVES = 5
MIN_NEGATIVES = 5
MIN_TRAIN = 10
"""Fewest training samples a fold trains on; a buffer that leaves fewer predicts nothing."""
N_BOOTSTRAP = 2000
BOOT_CHUNK = 100
"""Bootstrap resamples scored at once: 100 x 20,000 samples x 8 bytes = 16 MB."""
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
    rng = np.random.default_rng(seed)
    w_pos = rng.multinomial(pos.size, np.full(pos.size, 1.0 / pos.size), size=n_boot)
    w_neg = rng.multinomial(neg.size, np.full(neg.size, 1.0 / neg.size), size=n_boot)
    # Positive i outranks the negatives below it and ties with those equal to it: with
    # the negatives sorted, both are prefix sums of the resample's negative counts, so
    # each resample costs O(n), not the O(n_pos x n_neg) of a pairwise kernel (20,000
    # samples: 0.8 GB and minutes). Counts and half counts are exact in float64, so the
    # AUCs are the kernel's to the last bit.
    order = np.argsort(neg, kind="stable")
    below = np.searchsorted(neg[order], pos, side="left")
    upto = np.searchsorted(neg[order], pos, side="right")
    aucs = np.empty(n_boot)
    for start in range(0, n_boot, BOOT_CHUNK):
        counts = w_neg[start : start + BOOT_CHUNK, order]
        cum = np.zeros((len(counts), neg.size + 1))
        np.cumsum(counts, axis=1, out=cum[:, 1:])
        wins = cum[:, below] + 0.5 * (cum[:, upto] - cum[:, below])
        aucs[start : start + BOOT_CHUNK] = np.einsum(
            "bi,bi->b", w_pos[start : start + BOOT_CHUNK], wins
        )
    return aucs / (pos.size * neg.size)


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


def paired_auc_difference(
    labels: np.ndarray,
    proba_a: np.ndarray,
    proba_b: np.ndarray,
    *,
    n_boot: int = N_BOOTSTRAP,
    seed: int = 0,
) -> tuple[float, float, float] | None:
    """AUC of ``proba_a`` minus AUC of ``proba_b`` on the same samples, paired bootstrap 95 %.

    Both models are scored on the same resamples (the same stratified multinomial
    weights, :func:`bootstrap_auc` with one seed), so the interval is that of the
    difference, much narrower than the two intervals side by side when the models err
    on the same samples. None when either AUC is not defined.

    >>> y = np.array([0, 0, 0, 1, 1, 1] * 5); good = y + 0.1 * np.arange(30) % 1
    >>> diff, lo, hi = paired_auc_difference(y, good, np.zeros(30), n_boot=200)
    >>> diff, lo > 0
    (0.5, True)
    """
    labels = np.asarray(labels).astype(int)
    a, b = np.asarray(proba_a, np.float64), np.asarray(proba_b, np.float64)
    if _one_class(labels) or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return None
    diff = float(roc_auc_score(labels, a) - roc_auc_score(labels, b))
    boot = bootstrap_auc(labels, a, n_boot=n_boot, seed=seed) - bootstrap_auc(
        labels, b, n_boot=n_boot, seed=seed
    )
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return diff, float(lo), float(hi)


def brier_score(labels: np.ndarray, proba: np.ndarray) -> float | None:
    """Mean squared difference of probability and 0/1 outcome (None without predictions).

    >>> brier_score(np.array([0, 1]), np.array([0.2, 0.6]))
    0.1
    """
    labels, proba = np.asarray(labels, np.float64), np.asarray(proba, np.float64)
    ok = np.isfinite(proba)
    return round(float(np.mean((proba[ok] - labels[ok]) ** 2)), 6) if ok.any() else None


# --- folds ------------------------------------------------------------------------------------


CV_DESIGNS = ("knndm", "spatial", "buffered", "random")
"""The fold designs of ``train.cv`` (:mod:`soilsource.learn.folds`)."""


def spatial_folds(
    labels: np.ndarray,
    xy: np.ndarray,
    *,
    block_m: float,
    folds: int = 5,
    seed: int = 0,
    regions: np.ndarray | None = None,
) -> np.ndarray:
    """Fold id (0..k-1) per sample of :class:`~soilsource.learn.folds.SpatialBlocks`.

    >>> rng = np.random.default_rng(0)
    >>> xy = rng.uniform(0, 1000, size=(200, 2)); y = (xy[:, 0] > 600).astype(int)
    >>> sorted(set(spatial_folds(y, xy, block_m=200.0, folds=5, seed=0).tolist()))
    [0, 1, 2, 3, 4]
    """
    return SpatialBlocks(folds, seed, block_m=block_m).fold_ids(xy, labels, regions)


def random_folds(
    labels: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    regions: np.ndarray | None = None,
) -> np.ndarray:
    """Fold id per sample of :class:`~soilsource.learn.folds.RandomKFold` (optimistic in space).

    >>> random_folds(np.array([0, 1] * 5), folds=5, seed=0).tolist().count(0)
    2
    """
    return RandomKFold(folds, seed).fold_ids(None, labels, regions)


def fold_design(
    cv: str,
    *,
    folds: int = 5,
    seed: int = 0,
    block_m: float | None = None,
    buffer_m: float = 0.0,
    prediction_xy: np.ndarray | None = None,
) -> FoldDesign:
    """The fold design object of ``train.cv`` (``knndm``, ``spatial``, ``buffered``, ``random``).

    ``buffered`` is spatial blocks with ``buffer_m`` (the caller passes the patch side).
    """
    if folds < 2:
        raise InputError("train", "folds", f"must be at least 2, got {folds}")
    if cv == "random":
        return RandomKFold(folds, seed)
    if cv == "knndm":
        if prediction_xy is None:
            raise ValueError("kNNDM cross-validation needs prediction_xy")
        return KNNDM(folds, seed, prediction_xy=prediction_xy)
    if cv in ("spatial", "buffered"):
        if block_m is None:
            raise ValueError("spatial cross-validation needs xy and block_m")
        return SpatialBlocks(folds, seed, block_m=block_m, buffer_m=buffer_m)
    raise InputError("train", "cv", f"must be one of {', '.join(CV_DESIGNS)}, got {cv!r}")


def make_folds(
    labels: np.ndarray,
    xy: np.ndarray | None = None,
    *,
    cv: Literal["knndm", "spatial", "buffered", "random"] = "spatial",
    folds: int = 5,
    block_m: float | None = None,
    seed: int = 0,
    regions: np.ndarray | None = None,
    prediction_xy: np.ndarray | None = None,
) -> np.ndarray:
    """Fold ids of the design ``cv`` (see :func:`fold_design`)."""
    design = fold_design(cv, folds=folds, seed=seed, block_m=block_m, prediction_xy=prediction_xy)
    return _fold_ids(design, np.asarray(labels), xy, regions)


def _fold_ids(
    design: FoldDesign, labels: np.ndarray, xy: np.ndarray | None, regions: np.ndarray | None
) -> np.ndarray:
    if len(labels) < design.n_splits:
        raise InputError(
            "train", "folds", f"{design.n_splits} folds but only {len(labels)} samples"
        )
    if not isinstance(design, RandomKFold) and xy is None:
        raise ValueError("spatial cross-validation needs xy and block_m")
    return design.fold_ids(xy, labels, regions)


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
    design: dict[str, Any] = field(default_factory=dict)
    target: str = "label"
    pred_value: np.ndarray | None = None
    """Out-of-fold predicted median concentration (mg/kg) for ``target="value"``."""

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
                "design": self.design,
            },
        }


class FoldCheckpoint(Protocol):
    """Where :func:`cross_validate` keeps finished folds, so that a killed run resumes.

    :class:`soilsource.pipeline.resume.FoldStore` keeps them in the run directory. A fold's
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
    target: Target = "label",
) -> PatchEstimator:
    model = factory()
    if isinstance(model, nn.Module):
        return TorchPatchClassifier(
            model, settings=settings, device=device, num_threads=num_threads, target=target
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
    cv: Literal["knndm", "spatial", "buffered", "random"] = "spatial",
    block_m: float | None = None,
    buffer_m: float = 0.0,
    patch_m: float | None = None,
    prediction_xy: np.ndarray | None = None,
    target: Target = "label",
    values: np.ndarray | None = None,
    limits: np.ndarray | None = None,
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
        :class:`~soilsource.learn.training.TorchPatchClassifier` with ``settings`` and
        ``device``) or a :class:`~soilsource.learn.training.PatchEstimator`. Torch is seeded
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
        Number of folds and the design (:func:`fold_design`): ``"knndm"`` (needs
        ``prediction_xy``), ``"spatial"`` (blocks of ``block_m`` metres), ``"buffered"``
        (blocks and a buffer of ``buffer_m``, default ``patch_m``) or ``"random"``.
    buffer_m:
        Drop from each fold's training set the samples closer than this to a test
        sample of the same region (Chebyshev distance); 0 = none.
    prediction_xy:
        Points of the prediction area (kNNDM matches its test-to-training distances to
        theirs).
    target, values, limits:
        ``"label"``: models learn the 0/1 labels. ``"value"``: models learn the
        concentrations ``values`` (mg/kg; :mod:`soilsource.data.target`), and the out-of-fold
        probability is that of exceeding each sample's own ``limits``; the predicted
        median goes to :attr:`CVResult.pred_value`. Folds, stratification and AUC use
        ``labels`` either way.
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
        For torch models (see :func:`soilsource.learn.training.fit`).
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
        block_m=block_m if cv in ("spatial", "buffered") else None,
        buffer_m=float(buffer_m),
        seed=seed,
        optimistic=cv == "random",
        target=target,
    )
    regression = target == "value"
    y, limit, pred_value = labels, np.full(n, np.nan), np.full(n, np.nan)
    if regression:
        if values is None or limits is None:
            raise ValueError("target='value' needs values and limits")
        y, limit = np.asarray(values, dtype=np.float64), np.asarray(limits, np.float64)
        result.pred_value = pred_value
    if _one_class(labels):
        warn(f"{description}: one class only ({int(labels.sum())} positive of {n}); not trained")
        return _score(result, labels, region_arr, n_boot)

    strata_regions = None if regions is None else region_arr
    if cv == "buffered" and buffer_m <= 0:
        buffer_m = result.buffer_m = float(patch_m or 0.0)
    design = fold_design(
        cv, folds=folds, seed=seed, block_m=block_m, buffer_m=buffer_m, prediction_xy=prediction_xy
    )
    result.fold = _fold_ids(design, labels, coords, strata_regions)
    result.design = design.describe()
    result.folds = int(result.fold.max()) + 1
    groups = (
        block_ids(coords, block_m, region_arr)
        if block_m is not None and coords is not None
        else None
    )
    overlapping = np.zeros(n, dtype=bool)
    options = {"settings": settings, "device": device, "num_threads": num_threads, "target": target}

    steps = [*range(result.folds), *([result.folds] if final else [])]
    for k in track(steps, description):
        start = time.perf_counter()
        if k == result.folds:  # the final model, on every sample
            result.final = checkpoint.load_final() if checkpoint else None
            if result.final is None:
                seed_k = derive_seed(seed, k)
                result.final = _fit_one(factory, patches, y, groups, seed_k, options)
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
            info = dict(done[1])
            if regression:
                pred_value[test] = np.asarray(info.pop("pred_value"), dtype=np.float64)
            result.fold_info.append({**info, "from_checkpoint": True})
            continue
        if len(train) < MIN_TRAIN:
            warn(
                f"{description}: fold {k} keeps {len(train)} training samples (buffer "
                f"{buffer_m:g} m); its {len(test)} test samples get no prediction"
            )
        elif not regression and _one_class(labels[train]):
            warn(f"{description}: fold {k} has one class in training; predicting its share")
            result.proba[test] = labels[train].mean() if len(train) else np.nan
        else:
            model = _fit_one(
                factory,
                patches[train],
                y[train],
                None if groups is None else groups[train],
                derive_seed(seed, k),
                options,
            )
            if regression:
                result.proba[test] = model.predict_proba(patches[test], limit[test])
                pred_value[test] = model.predict_value(patches[test])
            else:
                result.proba[test] = model.predict_proba(patches[test])
            fit_result = getattr(model, "fit_result_", None)
            if fit_result is not None:
                info.update(best_epoch=fit_result.best_epoch, epochs=fit_result.epochs_run)
        result.fold_info.append({**info, "seconds": _since(start)})
        if checkpoint:
            saved = dict(result.fold_info[-1])
            if regression:
                saved["pred_value"] = pred_value[test].tolist()
            checkpoint.save_fold(k, test, result.proba[test], saved)

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
