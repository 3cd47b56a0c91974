"""Fitting a torch patch classifier on arrays: augmentation, weighted loss, early stopping.

A region has a few hundred samples, so training is built to squeeze them without
fooling itself:

- **Augmentation** with the eight rotations and flips of a square patch (the
  dihedral group D4), drawn at random for every patch of every batch, on the fly.
  Imagery has no preferred orientation at the scale of a patch, so these are free
  extra samples.
- **Class-weighted loss**: ``BCEWithLogitsLoss(pos_weight=n_neg / n_pos)`` from the
  training labels, so a rare positive class is not ignored.
- **Early stopping** on an inner validation split of the training samples
  (stratified; spatially blocked when block ids are given, see :func:`inner_split`).
  The weights of the best epoch are restored. "Best" is the lowest validation loss
  (the same class-weighted BCE), ties broken by the higher AUC (``monitor="loss"``,
  the default). AUC is what the evaluation reports, but on a validation split of ~40
  samples it moves by 0.05 per sample and sometimes peaks at epoch 1-3, stopping an
  untrained model; the loss is smoother. ``monitor="auc"`` (AUC first, loss on ties)
  is there for comparison; on the synthetic task of ``benchmarks/bench_training.py``
  the two are indistinguishable (out-of-fold AUC 0.573 +- 0.072 vs 0.575 +- 0.045 over
  four synthetic regions at 64 px).
- **Repeatable**: the same seed gives bit-identical weights on CPU with the same
  thread count (``torch.manual_seed``, a :class:`torch.Generator` for shuffling and
  augmentation, a seeded split; cuDNN set to deterministic algorithms on CUDA).
- **CPU threads**: as many as the process may use (``os.sched_getaffinity``), unless
  told otherwise (a Dask worker sharing a machine should pass fewer).

The layer is array-based and independent of files: ``patches`` is a float32 array
(N, C, H, W) of normalised square patches, ``labels`` is 0/1 (N,).
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Self

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from torch import nn

from soilsource.data.patches import BandStats, PatchArray, PatchesLike, batch_rows
from soilsource.data.target import LogNormalLink, Target, required_limit
from soilsource.errors import InputError
from soilsource.progress import track, warn

__all__ = [
    "EpochLog",
    "FitResult",
    "PatchEstimator",
    "Standardized",
    "TorchPatchClassifier",
    "TrainSettings",
    "augment",
    "available_cpus",
    "derive_seed",
    "dihedral",
    "fit",
    "inner_split",
    "predict_proba",
    "resolve_device",
    "share_cpus",
    "shift",
]

DIHEDRAL_ORDER = 8
"""Number of rotations and flips of a square: the dihedral group D4."""


class PatchEstimator(Protocol):
    """The one protocol of every model (:mod:`soilsource.models.registry` builds them):
    scikit-learn style ``fit``, and the two outputs.

    ``predict_proba`` returns the probability of the positive class (of exceeding
    ``limit``, mg/kg per patch, for a model of the concentration), shape (N,);
    ``predict_value`` the predicted median concentration (mg/kg), or None for a classifier
    of labels. Before ``fit`` both raise scikit-learn's ``NotFittedError``.
    """

    def fit(
        self,
        patches: PatchesLike,
        labels: np.ndarray,
        *,
        groups: np.ndarray | None = None,
        seed: int = 0,
    ) -> Self: ...

    def predict_proba(
        self, patches: PatchesLike, limit: np.ndarray | None = None
    ) -> np.ndarray: ...

    def predict_value(self, patches: PatchesLike) -> np.ndarray | None: ...


@dataclass(frozen=True)
class TrainSettings:
    """Hyperparameters of :func:`fit`; defaults chosen for accuracy per CPU second.

    Defaults: every sample trains for 20 epochs (``patience=None``: no inner validation
    split, no early stopping), AdamW at ``lr=3e-3`` decayed to zero along half a cosine.
    Measured on the demo city (512 px regions, 640 m patches, 4 spatial folds; 4 regions x
    2 cities, mean out-of-fold AUC; random forest 0.636): the previous defaults (early
    stopping on a fifth of the samples, patience 5, lr 1e-3 constant, at most 12 epochs)
    0.550; no early stopping, lr 1e-3, 10 epochs 0.588, 20 epochs 0.617; cosine lr 3e-3,
    12 epochs 0.608, 20 epochs 0.621 (one run each: differences under ~0.03 are noise). With ~120
    training samples a fold, the validation fifth is too small to pick an epoch (about 25
    samples: its loss and AUC are noise) and costs the fit a fifth of its data; longer
    training did not overfit in held-out AUC. What did not help (same runs): early stopping
    on validation AUC (0.546), patience 8 and 25 epochs (0.597, better only by training
    longer), a cosine schedule with early stopping (0.570), weight decay 0.1 with lr 3e-3
    (0.556). ``patience=N`` restores early stopping on the inner split (``monitor``).
    """

    max_epochs: int = 20
    batch_size: int = 32
    patience: int | None = None
    lr: float = 3e-3
    weight_decay: float = 1e-2
    val_fraction: float = 0.2
    monitor: Literal["auc", "loss"] = "loss"
    augment: bool = True
    predict_batch_size: int = 64
    schedule: Literal["constant", "cosine"] = "cosine"
    min_steps: int = 0
    shift_px: int = 0
    """Training augmentation: each patch also moved by a random whole-pixel offset of at most
    this many pixels (:func:`shift`), after its rotation/flip. A measurement lever
    (``benchmarks/bench_accuracy.py``, variants ``shift1`` and ``shift2``): on Meuse it did
    not help (0.863 and 0.865 against 0.870, 3 seeds; ``docs/method.md``), so it is 0."""
    tta: bool = False
    """Test-time augmentation: predictions averaged over the 8 rotations and flips of each
    patch. A measurement lever (``benchmarks/bench_accuracy.py``, variant ``tta``); the
    maps and occlusion of a run use the network as trained, so it is not a setting of
    ``soilsource run``."""

    def epochs_for(self, n_train: int) -> int:
        """Epochs for ``n_train`` samples: ``max_epochs``, or more so that training takes
        at least ``min_steps`` optimiser steps (small regions get enough updates).

        >>> TrainSettings(max_epochs=20, min_steps=300).epochs_for(124)  # 4 batches an epoch
        75
        >>> TrainSettings(max_epochs=20, min_steps=300).epochs_for(5000)
        20
        """
        per_epoch = max(1, math.ceil(n_train / self.batch_size))
        return max(self.max_epochs, math.ceil(self.min_steps / per_epoch))

    def __post_init__(self) -> None:
        no_patience = self.patience is not None and self.patience < 1
        if self.max_epochs < 1 or self.batch_size < 2 or no_patience:
            raise ValueError("max_epochs and patience must be >= 1, batch_size >= 2")
        if not 0.0 < self.val_fraction < 0.5:
            raise ValueError(f"val_fraction must be in (0, 0.5), got {self.val_fraction}")
        if self.monitor not in ("auc", "loss"):
            raise ValueError(f"monitor must be 'auc' or 'loss', got {self.monitor!r}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if self.shift_px < 0:
            raise ValueError(f"shift_px must be >= 0, got {self.shift_px}")


@dataclass(frozen=True)
class EpochLog:
    """Scores after one epoch; ``val_auc`` is None when the split has one class."""

    epoch: int
    train_loss: float
    val_loss: float | None
    val_auc: float | None


@dataclass
class FitResult:
    """What :func:`fit` did: the trained model (best weights restored) and its history."""

    model: nn.Module
    best_epoch: int
    epochs_run: int
    history: list[EpochLog]
    pos_weight: float
    train_index: np.ndarray
    val_index: np.ndarray
    val_split: Literal["spatial", "random", "none"]
    seconds: float
    stopped_early: bool = field(default=False)
    sigma_z: float | None = None


# --- small pieces -------------------------------------------------------------------------


_CPU_SHARE: int | None = None


def available_cpus() -> int:
    """CPU cores this process may run on (respects affinity masks and containers, and the
    share :func:`share_cpus` gave this process).

    >>> available_cpus() >= 1
    True
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return cores if _CPU_SHARE is None else max(1, min(cores, _CPU_SHARE))


def share_cpus(cpus: int) -> None:
    """Use ``cpus`` cores in this process from now on: torch's threads, the forest's jobs
    and the local compute pool (a process of a several-metal run, beside others)."""
    global _CPU_SHARE
    _CPU_SHARE = int(cpus)
    torch.set_num_threads(available_cpus())


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The torch device for ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda"``.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise InputError(
                "compute.device", repr(str(device)), "CUDA requested but no CUDA GPU is available"
            )
        return torch.device(name)
    raise InputError("compute.device", repr(str(device)), "must be auto, cpu or cuda")


def derive_seed(seed: int, *keys: int) -> int:
    """An independent 32-bit seed for a sub-task (a fold, a bootstrap) of a seeded run.

    >>> derive_seed(0, 1) == derive_seed(0, 1) != derive_seed(0, 2)
    True
    """
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Element ``k`` (0..7) of the dihedral group acting on the last two axes.

    ``k % 4`` quarter turns, then a left-right flip when ``k >= 4``. Element 0 is
    the identity.

    >>> x = torch.arange(4.0).reshape(1, 1, 2, 2)
    >>> dihedral(x, 1).flatten().tolist()
    [1.0, 3.0, 0.0, 2.0]
    """
    if not 0 <= k < DIHEDRAL_ORDER:
        raise ValueError(f"k must be in 0..7, got {k}")
    y = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(y, dims=(-1,)) if k >= 4 else y


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each patch of the batch under its own random rotation/flip, drawn from ``generator``."""
    which = torch.randint(0, DIHEDRAL_ORDER, (x.shape[0],), generator=generator)
    out = torch.empty_like(x)
    for k in range(DIHEDRAL_ORDER):
        idx = torch.nonzero(which == k).flatten().to(x.device)
        if idx.numel():
            out[idx] = dihedral(x[idx], k)
    return out


def shift(x: torch.Tensor, generator: torch.Generator, shift_px: int) -> torch.Tensor:
    """Each patch moved by its own offset ``(dy, dx)``, each uniform in ``-shift_px..shift_px``;
    the strip that enters at the edge is 0, which in normalised patches is "no data".

    Why: a sample is a point (or a composite of a few metres) whose position and the
    image's registration are each uncertain by about a pixel, so the network should not
    depend on which pixel exactly is under it.

    >>> moved = shift(torch.ones(6, 1, 5, 5), torch.Generator().manual_seed(0), 1)
    >>> moved.sum(dim=(1, 2, 3)).tolist()  # 25: not moved; 20: along one axis; 16: both
    [16.0, 16.0, 16.0, 16.0, 20.0, 16.0]
    """
    if shift_px < 0:
        raise ValueError(f"shift_px must be >= 0, got {shift_px}")
    n, size = x.shape[0], 2 * shift_px + 1
    offsets = torch.randint(0, size * size, (n,), generator=generator)
    out = torch.zeros_like(x)
    height, width = x.shape[-2:]
    for code in torch.unique(offsets).tolist():
        dy, dx = code // size - shift_px, code % size - shift_px
        idx = torch.nonzero(offsets == code).flatten().to(x.device)
        src = x[idx][..., max(0, -dy) : height - max(0, dy), max(0, -dx) : width - max(0, dx)]
        out[idx, ..., max(0, dy) : height - max(0, -dy), max(0, dx) : width - max(0, -dx)] = src
    return out


def inner_split(
    labels: np.ndarray,
    groups: np.ndarray | None = None,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, Literal["spatial", "random", "none"]]:
    """Split training samples into fit and early-stopping parts, stratified by label.

    With ``groups`` (spatial block ids) the split keeps blocks whole
    (:class:`~sklearn.model_selection.StratifiedGroupKFold`, first of
    ``round(1 / val_fraction)`` folds), so early stopping is judged on places the
    model has not seen, as the outer cross-validation will judge it. When that is
    not feasible (too few blocks, or the validation part would miss a class) it
    falls back to a stratified random split; with fewer than two samples of a class
    there is no validation at all (``"none"``: train for ``max_epochs``).

    Returns (train_index, val_index, kind).

    >>> y = np.array([0, 1] * 10)
    >>> tr, va, kind = inner_split(y, val_fraction=0.2, seed=0)
    >>> len(va), kind, sorted(set(y[va].tolist()))
    (4, 'random', [0, 1])
    """
    labels = np.asarray(labels)
    everything = np.arange(len(labels))
    counts = np.bincount(labels.astype(int), minlength=2)
    n_splits = max(2, round(1.0 / val_fraction))
    if counts.min() < 2:
        return everything, everything[:0], "none"
    # (sklearn refuses more folds than the larger class has members: then split at random)
    if groups is not None and len(np.unique(groups)) >= n_splits and counts.max() >= n_splits:
        splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # few members of a class: handled
            train, val = next(splitter.split(everything, labels, groups))
        if _both_classes(labels[train]) and _both_classes(labels[val]):
            return train, val, "spatial"
    n_splits = min(n_splits, int(counts.min()))
    splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train, val = next(splitter.split(everything, labels))
    return train, val, "random"


def _both_classes(labels: np.ndarray) -> bool:
    return bool(labels.size) and labels.min() != labels.max()


def _check_arrays(
    patches: PatchesLike | torch.Tensor, labels: np.ndarray | None = None, target: Target = "label"
) -> None:
    if patches.ndim != 4:
        raise ValueError(f"patches must be (N, C, H, W), got shape {tuple(patches.shape)}")
    if patches.shape[-1] != patches.shape[-2]:
        raise ValueError(f"patches must be square, got {tuple(patches.shape[-2:])}")
    if labels is not None:
        if labels.shape != (patches.shape[0],):
            raise ValueError(f"labels must be ({patches.shape[0]},), got {labels.shape}")
        if target == "label" and not np.isin(labels, (0, 1)).all():
            raise ValueError("labels must be 0 or 1")
        if target == "value" and not np.isfinite(labels).all():
            raise ValueError("standardised log values must be finite")


def _as_tensor(patches: np.ndarray | torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(patches)
    if x.dtype != torch.float32:
        x = x.float()
    return x


Inputs = torch.Tensor | PatchArray
"""What training and prediction index batch by batch: a tensor in memory, or a lazy
:class:`~soilsource.data.patches.PatchArray` read batch by batch (many samples)."""


def _as_input(patches: PatchesLike | torch.Tensor) -> Inputs:
    return patches if isinstance(patches, PatchArray) else _as_tensor(patches)


def _take(x: Inputs, index: torch.Tensor | np.ndarray | slice) -> torch.Tensor:
    """The patches at ``index`` as a float32 tensor (read now from a lazy array, whose
    batches are checked for NaN as they come: the whole is never in memory)."""
    if isinstance(x, torch.Tensor):
        return x[index]
    rows = np.arange(len(x))[index] if isinstance(index, slice) else np.asarray(index)
    out = _as_tensor(batch_rows(x, rows))
    if not torch.isfinite(out).all():
        raise ValueError("patches contain NaN or infinity: standardise them first (Standardized)")
    return out


def _batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Split a permutation into batches; a last batch of one joins the previous one.

    A batch of one breaks batch normalisation in training mode.
    """
    parts = list(order.split(batch_size))
    if len(parts) > 1 and parts[-1].numel() == 1:
        parts[-2:] = [torch.cat(parts[-2:])]
    return parts


@contextmanager
def _compute_context(device: torch.device, num_threads: int | None) -> Iterator[None]:
    """CPU threads and deterministic cuDNN for the duration of a fit; restored after."""
    threads = torch.get_num_threads()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    if device.type == "cpu":
        torch.set_num_threads(num_threads or available_cpus())
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def _logits(
    model: nn.Module, x: Inputs, device: torch.device, batch_size: int, tta: bool = False
) -> torch.Tensor:
    """Model outputs in evaluation mode, batch by batch, on the CPU (``tta``: the mean
    output over the 8 rotations and flips of each patch)."""
    model.eval()
    out = []
    views = range(DIHEDRAL_ORDER) if tta else range(1)
    with torch.inference_mode():
        for start in range(0, x.shape[0], batch_size):
            xb = _take(x, slice(start, start + batch_size)).to(device)
            mean = sum(model(dihedral(xb, k)).float().reshape(-1) for k in views) / len(views)
            out.append(mean.cpu())
    return torch.cat(out) if out else torch.empty(0)


# --- training -----------------------------------------------------------------------------


def fit(
    model: nn.Module,
    patches: PatchesLike | torch.Tensor,
    labels: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    seed: int = 0,
    device: str | torch.device = "auto",
    settings: TrainSettings | None = None,
    num_threads: int | None = None,
    progress: bool = False,
    target: Target = "label",
) -> FitResult:
    """Train ``model`` (one output per patch) in place and return it with its history.

    Parameters
    ----------
    model:
        A module mapping (B, C, H, W) float32 to (B,) logits. Its initial weights are
        the caller's: seed torch before building it for a repeatable run.
    patches, labels:
        Normalised square patches (N, C, H, W) and 0/1 labels (N,), both classes present.
    groups:
        Spatial block id per sample; the inner validation split keeps blocks whole.
    seed:
        Seeds shuffling, augmentation, dropout and the inner split.
    device:
        ``"auto"``, ``"cpu"``, ``"cuda"`` or a :class:`torch.device`.
    settings:
        Hyperparameters (:class:`TrainSettings`); defaults when None.
    num_threads:
        CPU threads for torch; default all cores this process may use.
    progress:
        Show a progress bar over epochs.
    target:
        ``"label"``: ``labels`` are 0/1 and the output is a logit (class-weighted binary
        cross-entropy). ``"value"``: ``labels`` are standardised log concentrations ``z``
        (:meth:`~soilsource.data.target.LogNormalLink.encode`) and the output is the predicted
        ``z``; the loss is the Gaussian negative log-likelihood with one learned spread
        ``sigma_z`` (returned in :attr:`FitResult.sigma_z`). The spread is one number per
        model, not per patch: the model's output stays one number per patch, which keeps
        occlusion and dense maps exact (a per-patch spread would need a second head that
        maps and occlusion carry along; with a few hundred samples it is poorly
        determined anyway).

    Examples
    --------
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 1), nn.Flatten(0))
    >>> x = np.random.default_rng(0).normal(size=(40, 2, 4, 4)).astype("float32")
    >>> y = (x[:, 0].mean(axis=(1, 2)) > 0).astype(int)
    >>> result = fit(net, x, y, device="cpu", settings=TrainSettings(max_epochs=3))
    >>> result.epochs_run, len(result.history), result.val_split  # default: no inner split
    (3, 3, 'none')
    >>> early = fit(net, x, y, device="cpu", settings=TrainSettings(max_epochs=3, patience=2))
    >>> early.val_split  # early stopping holds out an inner validation split
    'random'
    """
    settings = settings or TrainSettings()
    labels = np.asarray(labels)
    _check_arrays(patches, labels, target)
    regression = target == "value"
    if not regression and not _both_classes(labels):
        raise ValueError("training needs both classes in labels")
    x_all = _as_input(patches)
    if isinstance(x_all, torch.Tensor) and not torch.isfinite(x_all).all():
        raise ValueError("patches contain NaN or infinity: standardise them first (Standardized)")
    device = resolve_device(device)
    start = time.perf_counter()

    if settings.patience is not None:
        # a regression's split is stratified by halves of the target
        strata = (labels > np.median(labels)).astype(int) if regression else labels
        train_idx, val_idx, val_split = inner_split(
            strata, groups, val_fraction=settings.val_fraction, seed=derive_seed(seed, 0)
        )
    else:  # every sample trains, for exactly max_epochs
        train_idx, val_idx, val_split = np.arange(len(labels)), np.arange(0), "none"
    if val_split == "none" and settings.patience is not None:
        warn(
            f"too few samples of a class for early stopping; training {settings.max_epochs} epochs"
        )
    y_train = labels[train_idx]
    pos_weight = 1.0 if regression else float((y_train == 0).sum() / max((y_train == 1).sum(), 1))

    y_all = torch.as_tensor(labels, dtype=torch.float32)
    x_val, y_val = x_all[val_idx], labels[val_idx]

    with _compute_context(device, num_threads):
        torch.manual_seed(derive_seed(seed, 1))  # dropout and any other global randomness
        generator = torch.Generator().manual_seed(derive_seed(seed, 2))
        model.to(device)
        # log of the spread sigma_z (regression only), learned with the model, not decayed
        log_sigma = torch.zeros((), device=device, requires_grad=True)
        groups_: list[dict[str, Any]] = [{"params": list(model.parameters())}]
        if regression:
            groups_.append({"params": [log_sigma], "weight_decay": 0.0})
        optimiser = torch.optim.AdamW(groups_, lr=settings.lr, weight_decay=settings.weight_decay)
        if regression:

            def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
                return (0.5 * ((y - out) / log_sigma.exp()) ** 2 + log_sigma).mean()

        else:
            loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pos_weight, device=device))
        n_epochs = settings.epochs_for(len(train_idx))
        scheduler = (
            torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=n_epochs)
            if settings.schedule == "cosine"
            else None
        )
        train_t = torch.as_tensor(train_idx)
        members = int(getattr(model, "members", 1))

        history: list[EpochLog] = []
        best_key: tuple[float, float] = (-math.inf, -math.inf)
        best_state, best_epoch, since_best = None, 0, 0
        epochs = range(1, n_epochs + 1)
        for epoch in track(epochs, "training epochs") if progress else epochs:
            model.train()
            total, seen = 0.0, 0
            order = train_t[torch.randperm(len(train_t), generator=generator)]
            for batch in _batches(order, settings.batch_size):
                xb = _take(x_all, batch).to(device, non_blocking=True)
                if settings.augment:
                    xb = augment(xb, generator)
                if settings.shift_px:  # after the rotation, from the same generator
                    xb = shift(xb, generator, settings.shift_px)
                yb = y_all[batch].to(device)
                if members > 1:  # every member scored on its own: an ensemble, not one net
                    out = model.member_outputs(xb)  # type: ignore[operator]  # SI-LICNet's
                    loss = loss_fn(out, yb[:, None].expand_as(out))
                else:
                    loss = loss_fn(model(xb).reshape(-1), yb)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                total += loss.item() * len(batch)
                seen += len(batch)
            if scheduler is not None:
                scheduler.step()

            log = _validate(
                model, x_val, y_val, loss_fn, device, settings, epoch, total / seen, regression
            )
            history.append(log)
            key = _score_key(log, settings.monitor)
            if val_split == "none" or key > best_key:
                best_key, best_epoch, since_best = key, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                since_best += 1
                if since_best >= (settings.patience or math.inf):
                    break

        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()

    return FitResult(
        model=model,
        best_epoch=best_epoch,
        epochs_run=len(history),
        history=history,
        pos_weight=pos_weight,
        train_index=train_idx,
        val_index=val_idx,
        val_split=val_split,
        seconds=time.perf_counter() - start,
        stopped_early=len(history) < n_epochs,
        sigma_z=float(log_sigma.detach().exp()) if regression else None,
    )


def _validate(
    model: nn.Module,
    x_val: Inputs,
    y_val: np.ndarray,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    device: torch.device,
    settings: TrainSettings,
    epoch: int,
    train_loss: float,
    regression: bool = False,
) -> EpochLog:
    if len(y_val) == 0:
        return EpochLog(epoch, train_loss, None, None)
    logits = _logits(model, x_val, device, settings.predict_batch_size)
    with torch.no_grad():
        val_loss = float(loss_fn(logits.to(device), torch.as_tensor(y_val, device=device).float()))
    has_auc = not regression and _both_classes(y_val)
    val_auc = float(roc_auc_score(y_val, logits.numpy())) if has_auc else None
    return EpochLog(epoch, train_loss, val_loss, val_auc)


def _score_key(log: EpochLog, monitor: str) -> tuple[float, float]:
    """Larger is better: (AUC, -loss) for monitor="auc", (-loss, AUC) for "loss"."""
    auc = -math.inf if log.val_auc is None else log.val_auc
    neg_loss = -math.inf if log.val_loss is None else -log.val_loss
    if math.isnan(neg_loss):
        return (-math.inf, -math.inf)
    return (auc, neg_loss) if monitor == "auc" else (neg_loss, auc)


def predict_proba(
    model: nn.Module,
    patches: PatchesLike | torch.Tensor,
    device: str | torch.device = "auto",
    *,
    batch_size: int = 64,
    tta: bool = False,
) -> np.ndarray:
    """Probability of the positive class for each patch, float64 (N,), in eval mode.

    >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 1), nn.Flatten(0))
    >>> predict_proba(net, np.zeros((3, 1, 2, 2), "float32"), "cpu").shape
    (3,)
    """
    _check_arrays(patches)
    device = resolve_device(device)
    model.to(device)
    logits = _logits(model, _as_input(patches), device, batch_size, tta)
    return torch.sigmoid(logits).double().numpy()


class TorchPatchClassifier:
    """A torch module with its training settings, as a scikit-learn style estimator.

    This is how evaluation runs SI-LICNet and the torchvision baselines through the
    same harness as the random forest (:class:`PatchEstimator`).

    Parameters
    ----------
    module:
        An untrained module (B, C, H, W) -> (B,) outputs; trained in place by :meth:`fit`.
    settings, device, num_threads, progress:
        Passed to :func:`fit`.
    target:
        ``"label"``: :meth:`fit` takes 0/1 labels, the output is a logit. ``"value"``:
        :meth:`fit` takes concentrations (mg/kg); the module learns their standardised
        log and a spread (:class:`~soilsource.data.target.LogNormalLink`, kept in ``link_``),
        and :meth:`predict_proba` needs each sample's limit.
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        settings: TrainSettings | None = None,
        device: str | torch.device = "auto",
        num_threads: int | None = None,
        progress: bool = False,
        target: Target = "label",
    ) -> None:
        self.module = module
        self.settings = settings or TrainSettings()
        self.device = device
        self.num_threads = num_threads
        self.progress = progress
        self.target = target
        self.fit_result_: FitResult | None = None
        self.link_: LogNormalLink | None = None

    def fit(
        self,
        patches: PatchesLike,
        labels: np.ndarray,
        *,
        groups: np.ndarray | None = None,
        seed: int = 0,
    ) -> Self:
        """Train the module on labels (or concentrations, for ``target="value"``)."""
        y = np.asarray(labels)
        if self.target == "value":
            link = LogNormalLink.fit(y)
            y = link.encode(y)
        self.fit_result_ = fit(
            self.module,
            patches,
            y,
            groups=groups,
            seed=seed,
            device=self.device,
            settings=self.settings,
            num_threads=self.num_threads,
            progress=self.progress,
            target=self.target,
        )
        if self.target == "value":
            self.link_ = link.with_sigma_z(self.fit_result_.sigma_z or 1.0)
        return self

    def decision_function(self, patches: PatchesLike) -> np.ndarray:
        """The module's raw output per patch (a logit, or a standardised log value), (N,)."""
        _check_arrays(patches)
        device = resolve_device(self.device)
        self.module.to(device)
        out = _logits(
            self.module,
            _as_input(patches),
            device,
            self.settings.predict_batch_size,
            self.settings.tta,
        )
        return out.double().numpy()

    def predict_proba(self, patches: PatchesLike, limit: np.ndarray | None = None) -> np.ndarray:
        """Probability of the positive class (of exceeding ``limit``, mg/kg, per patch)."""
        if self.target == "label":
            return predict_proba(
                self.module,
                patches,
                self.device,
                batch_size=self.settings.predict_batch_size,
                tta=self.settings.tta,
            )
        return self._link().exceedance(self.decision_function(patches), required_limit(limit))

    def predict_value(self, patches: PatchesLike) -> np.ndarray | None:
        """Predicted median concentration (mg/kg) per patch; None for ``target="label"``."""
        if self.target == "label":
            return None
        return self._link().median(self.decision_function(patches))

    def _link(self) -> LogNormalLink:
        if self.link_ is None:
            raise NotFittedError("TorchPatchClassifier is not fitted: call fit first")
        return self.link_


IN_MEMORY_MB = 512
"""Training patches up to this size (float32) are read and standardised once per fit and
held in memory; larger sets stream batch by batch (a 100,000-sample run). At demo size
(about 130 patches of 6 bands x 64 x 64 px, 13 MB per region), reading and scaling every batch
of every epoch again was 10 % of a run (py-spy)."""


def _nbytes(patches: PatchArray) -> int:
    return int(np.prod(patches.shape)) * 4


class Standardized:
    """Band standardisation fitted on the training patches only, around another estimator.

    Cross-validation hands each fold's training patches to :meth:`fit`; the per-band mean
    and standard deviation come from their valid pixels alone
    (:class:`~soilsource.data.patches.BandStats`), so nothing of the test samples leaks into the
    scaling. Patches are in physical units with NaN where there is no data; after scaling
    those pixels are 0, the band mean, which is also the occlusion baseline.

    Parameters
    ----------
    inner:
        The estimator that sees standardised patches (e.g. a :class:`TorchPatchClassifier`).
    """

    def __init__(self, inner: PatchEstimator) -> None:
        self.inner = inner
        self.stats_: BandStats | None = None

    @property
    def fit_result_(self) -> FitResult | None:
        """The inner estimator's training record, when it keeps one."""
        return getattr(self.inner, "fit_result_", None)

    def fit(
        self,
        patches: PatchesLike,
        labels: np.ndarray,
        *,
        groups: np.ndarray | None = None,
        seed: int = 0,
    ) -> Self:
        """Fit the band statistics on ``patches``, then the inner estimator on them scaled."""
        self.stats_ = BandStats.fit_physical(patches)
        scaled = self.transform(patches)
        if isinstance(scaled, PatchArray) and _nbytes(scaled) <= IN_MEMORY_MB * 2**20:
            scaled = np.asarray(scaled)  # read and scaled once, not once per epoch
        self.inner.fit(scaled, labels, groups=groups, seed=seed)
        return self

    def transform(self, patches: PatchesLike) -> PatchesLike:
        """Standardised float32 patches; pixels without data become 0 (the band mean). A
        lazy :class:`~soilsource.data.patches.PatchArray` stays lazy (scaled as read)."""
        if self.stats_ is None:
            raise NotFittedError("Standardized is not fitted: call fit first")
        if isinstance(patches, PatchArray):  # scaled as each batch is read
            return patches.map(self.stats_.transform_physical)
        return self.stats_.transform_physical(patches)

    def predict_proba(self, patches: PatchesLike, limit: np.ndarray | None = None) -> np.ndarray:
        """Probability of the positive class of the inner estimator, (N,)."""
        if limit is None:
            return self.inner.predict_proba(self.transform(patches))
        return self.inner.predict_proba(self.transform(patches), limit)

    def predict_value(self, patches: PatchesLike) -> np.ndarray | None:
        """Predicted median concentration of the inner estimator, or None."""
        predict = getattr(self.inner, "predict_value", None)
        return None if predict is None else predict(self.transform(patches))
