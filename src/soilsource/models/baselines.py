"""Baselines run through the same harness as SI-LICNet: same patches, folds and labels.

- ``random_forest``: the usual digital-soil-mapping approach. Per band, summary
  statistics (mean, standard deviation, and the 10/50/90 % quantiles in the larger
  windows) in centred square windows of 1, 3, 9, 27, ... pixels up to the whole patch,
  computed from the same patches array, fed to a scikit-learn
  :class:`~sklearn.ensemble.RandomForestClassifier` with balanced class weights.
- ``mobilenet_v3_small`` and ``resnet18``: torchvision's architectures with random
  initial weights (``weights=None``). Pretrained ImageNet weights cannot be downloaded
  here and would not fit six or more spectral bands anyway; the first convolution is
  replaced to take the band count, and the classifier gives one logit. They are trained
  by :func:`soilsource.learn.training.fit`, like SI-LICNet.

The names, labels and the one estimator factory of every model are in
:mod:`soilsource.models.registry`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Self

import numpy as np
import torch
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.exceptions import NotFittedError
from torch import nn
from torchvision import models as tvm

from soilsource.data.patches import PatchArray, PatchesLike, batch_rows
from soilsource.data.target import LogNormalLink, Target, log_values, required_limit
from soilsource.learn.training import available_cpus

__all__ = [
    "TorchvisionLogit",
    "TreeEnsemble",
    "WindowStatsForest",
    "mobilenet_v3_small",
    "random_forest",
    "resnet18",
    "window_feature_names",
    "window_scales",
    "window_statistics",
]

QUANTILES = (10.0, 50.0, 90.0)
_MIN_PIXELS_FOR_QUANTILES = 81  # quantiles of fewer pixels are mostly noise


# --- multi-scale window statistics ----------------------------------------------------------


def window_scales(patch_px: int) -> tuple[int, ...]:
    """Window sides 1, 3, 9, 27, ... below ``patch_px``, then the whole patch.

    Powers of three are centred on the sample pixel and nest without gaps in scale.

    >>> window_scales(128)
    (1, 3, 9, 27, 81, 128)
    >>> window_scales(32)
    (1, 3, 9, 27, 32)
    """
    if patch_px < 1:
        raise ValueError(f"patch_px must be >= 1, got {patch_px}")
    scales = [1]
    while scales[-1] * 3 < patch_px:
        scales.append(scales[-1] * 3)
    if scales[-1] != patch_px:
        scales.append(patch_px)
    return tuple(scales)


def _statistics(side: int) -> tuple[str, ...]:
    if side == 1:
        return ("value",)
    if side * side < _MIN_PIXELS_FOR_QUANTILES:
        return ("mean", "std")
    return ("mean", "std", *(f"q{q:g}" for q in QUANTILES))


def window_feature_names(n_bands: int, scales: tuple[int, ...]) -> list[str]:
    """Names of the columns of :func:`window_statistics`, e.g. ``"b0_w9_mean"``.

    >>> window_feature_names(1, (1, 3))
    ['b0_w1_value', 'b0_w3_mean', 'b0_w3_std']
    """
    return [f"b{b}_w{s}_{stat}" for s in scales for b in range(n_bands) for stat in _statistics(s)]


FEATURE_BATCH = 512
"""Patches of a lazy :class:`~soilsource.data.patches.PatchArray` read per step of
:func:`window_statistics` (512 patches of 128 px and 6 bands: 200 MB)."""


def window_statistics(
    patches: np.ndarray | PatchArray, scales: tuple[int, ...] | None = None
) -> np.ndarray:
    """Per band, statistics in centred windows of each side in ``scales``: (N, F) float32.

    The window of side ``s`` starts at row and column ``H // 2 - s // 2``, the pixel
    holding the sample for odd and even patch sizes alike. NaN pixels (nodata) are
    ignored; a window of only NaN gives NaN, which the forest routes as missing.

    >>> x = np.arange(9, dtype="float32").reshape(1, 1, 3, 3)
    >>> window_statistics(x, (1, 3)).astype("float64").round(3).tolist()
    [[4.0, 4.0, 2.582]]
    """
    if isinstance(patches, PatchArray) and len(patches) > FEATURE_BATCH:  # read in batches
        n = len(patches)
        parts = (np.arange(s, min(s + FEATURE_BATCH, n)) for s in range(0, n, FEATURE_BATCH))
        return np.concatenate([window_statistics(batch_rows(patches, i), scales) for i in parts])
    patches = np.asarray(patches)
    if patches.ndim != 4 or patches.shape[-1] != patches.shape[-2]:
        raise ValueError(f"patches must be (N, C, H, H), got {patches.shape}")
    n, c, h, _ = patches.shape
    scales = scales or window_scales(h)
    if max(scales) > h:
        raise ValueError(f"window {max(scales)} px is larger than the {h} px patch")
    blocks = []
    for side in scales:
        r0 = h // 2 - side // 2
        window = patches[:, :, r0 : r0 + side, r0 : r0 + side].reshape(n, c, -1)
        window = window.astype(np.float64)
        has_nan = bool(np.isnan(window).any())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows give NaN
            stats = _window_statistics(window, _statistics(side), has_nan)
        blocks.append(np.stack(stats, axis=-1).reshape(n, -1))  # band-major, as the names
    return np.concatenate(blocks, axis=1).astype(np.float32)


def _window_statistics(window: np.ndarray, names: tuple[str, ...], has_nan: bool) -> list:
    """The statistics ``names`` of each row of ``window`` (..., pixels), in that order; the
    quantiles are taken together (one sort of the window for all of them)."""
    quantiles = [float(name[1:]) for name in names if name.startswith("q")]
    if quantiles and has_nan:
        qs = _nanpercentile_rows(window, quantiles)
    elif quantiles:
        qs = np.percentile(window, quantiles, axis=-1)
    out, k = [], 0
    for name in names:
        if name in ("value", "mean"):
            out.append(np.nanmean(window, axis=-1) if has_nan else window.mean(axis=-1))
        elif name == "std":
            out.append(np.nanstd(window, axis=-1) if has_nan else window.std(axis=-1))
        else:
            out.append(qs[k])
            k += 1
    return out


def _nanpercentile_rows(window: np.ndarray, q: list[float]) -> np.ndarray:
    """``np.nanpercentile(window, q, axis=-1)``, the same numbers, without its row loop.

    With an axis, ``np.nanpercentile`` goes through ``apply_along_axis``, one Python call
    per row: it was 12 % of a demo-size run (about 10 s of 75 s, py-spy). A row's NaN-free
    percentile depends only on its valid values, so rows are sorted once (NaN last) and
    grouped by their count of valid values, and ``np.percentile`` takes each group at once:
    a few vectorised calls, bit-identical to ``np.nanpercentile`` (tests/test_baselines.py).
    Returns (len(q), ...) as numpy does for a list of ``q``.
    """
    lead, width = window.shape[:-1], window.shape[-1]
    rows = np.sort(window.reshape(-1, width), axis=-1)  # NaN sort last
    valid = width - np.isnan(rows).sum(axis=-1)
    out = np.full((len(q), len(rows)), np.nan)  # all-NaN rows stay NaN
    for count in np.unique(valid[valid > 0]):
        which = valid == count
        out[:, which] = np.percentile(rows[which, :count], q, axis=-1)
    return out.reshape((len(q), *lead))


# --- random forest, and a predict-only copy of it built from plain arrays -------------------


@dataclass(frozen=True)
class TreeEnsemble:
    """A fitted random forest as plain arrays: predicts exactly like scikit-learn's.

    It exists so a trained forest can be saved and loaded without pickle (which runs
    code on load): all trees' nodes are concatenated, ``offsets[t]:offsets[t + 1]``
    being tree ``t``; child indices are local to their tree, -1 at leaves.
    ``value`` holds the class fractions at each node, as in
    ``DecisionTreeClassifier.tree_.value`` (scikit-learn >= 1.4).
    """

    children_left: np.ndarray
    children_right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    missing_go_to_left: np.ndarray
    value: np.ndarray
    offsets: np.ndarray
    n_features: int

    ARRAYS = (
        "children_left",
        "children_right",
        "feature",
        "threshold",
        "missing_go_to_left",
        "value",
        "offsets",
    )

    @classmethod
    def from_forest(cls, forest: RandomForestClassifier | RandomForestRegressor) -> TreeEnsemble:
        """Copy the node arrays of a fitted binary forest (or a one-output regressor)."""
        if hasattr(forest, "classes_") and list(forest.classes_) != [0, 1]:
            raise ValueError(f"expected classes [0, 1], got {list(forest.classes_)}")
        trees = [est.tree_ for est in forest.estimators_]
        counts = [t.node_count for t in trees]
        return cls(
            children_left=np.concatenate([t.children_left for t in trees]).astype(np.int64),
            children_right=np.concatenate([t.children_right for t in trees]).astype(np.int64),
            feature=np.concatenate([t.feature for t in trees]).astype(np.int64),
            threshold=np.concatenate([t.threshold for t in trees]).astype(np.float64),
            missing_go_to_left=np.concatenate([t.missing_go_to_left for t in trees]).astype(
                np.uint8
            ),
            value=np.concatenate([t.value[:, 0, :] for t in trees]).astype(np.float64),
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            n_features=int(forest.n_features_in_),
        )

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], n_features: int) -> TreeEnsemble:
        """Rebuild from :meth:`arrays` output, checking the structure.

        Raises ValueError for arrays that are not a valid forest (wrong shapes or
        types, children out of range or not after their parent, which could loop).
        """
        missing = [k for k in cls.ARRAYS if k not in arrays]
        if missing:
            raise ValueError(f"missing arrays: {', '.join(missing)}")
        ens = cls(**{k: np.asarray(arrays[k]) for k in cls.ARRAYS}, n_features=int(n_features))
        ens._check()
        return ens

    def arrays(self) -> dict[str, np.ndarray]:
        """The node arrays by name (for ``np.savez``)."""
        return {k: getattr(self, k) for k in self.ARRAYS}

    @property
    def n_trees(self) -> int:
        return len(self.offsets) - 1

    def _check(self) -> None:
        n = len(self.children_left)
        int_arrays = ("children_left", "children_right", "feature", "offsets")
        for name in self.ARRAYS:
            a = getattr(self, name)
            kind = "iu" if name in int_arrays or name == "missing_go_to_left" else "f"
            if a.dtype.kind not in kind:
                raise ValueError(f"{name}: unexpected dtype {a.dtype}")
        if self.value.ndim != 2 or self.value.shape not in ((n, 2), (n, 1)):
            raise ValueError(f"value must be ({n}, 2) or ({n}, 1), got {self.value.shape}")
        for name in ("children_right", "feature", "threshold", "missing_go_to_left"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have {n} entries")
        off = self.offsets
        if off.ndim != 1 or len(off) < 2 or off[0] != 0 or off[-1] != n or np.any(np.diff(off) < 1):
            raise ValueError("offsets do not partition the nodes into trees")
        sizes = np.repeat(np.diff(off), np.diff(off))
        local = np.arange(n) - np.repeat(off[:-1], np.diff(off))
        left, right = self.children_left, self.children_right
        leaf = left == -1
        if np.any(leaf != (right == -1)):
            raise ValueError("a node has exactly one child")
        inner = ~leaf
        ok_children = (
            (left[inner] > local[inner])
            & (right[inner] > local[inner])
            & (left[inner] < sizes[inner])
            & (right[inner] < sizes[inner])
        )
        if not ok_children.all():
            raise ValueError("child indices out of range")
        if np.any((self.feature[inner] < 0) | (self.feature[inner] >= self.n_features)):
            raise ValueError("feature indices out of range")

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities (N, 2) (or regression means (N, 1)), bit for bit those of the
        source forest.

        Same arithmetic as scikit-learn: features as float32, compared with float64
        thresholds; NaN follows ``missing_go_to_left``; leaf fractions summed over trees
        in order, then divided by the number of trees.
        """
        x = np.asarray(features, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"features must be (N, {self.n_features}), got {x.shape}")
        rows = np.arange(x.shape[0])
        total = np.zeros((x.shape[0], self.value.shape[1]), dtype=np.float64)
        for t in range(self.n_trees):
            base = self.offsets[t]
            node = np.zeros(x.shape[0], dtype=np.int64)
            while True:
                left = self.children_left[base + node]
                inner = left != -1
                if not inner.any():
                    break
                g = base + node
                xv = x[rows, np.where(inner, self.feature[g], 0)]
                go_left = np.where(
                    np.isnan(xv), self.missing_go_to_left[g] != 0, xv <= self.threshold[g]
                )
                step = np.where(go_left, left, self.children_right[g])
                node = np.where(inner, step, node)
            total += self.value[base + node]
        total /= self.n_trees
        return total


class WindowStatsForest:
    """Random forest on multi-scale window statistics of patches (the DSM baseline).

    Parameters
    ----------
    scales:
        Window sides in pixels; default :func:`window_scales` of the patch size.
    n_estimators, min_samples_leaf, max_features:
        Passed to :class:`~sklearn.ensemble.RandomForestClassifier` (with
        ``class_weight="balanced"``).
    n_jobs:
        Threads for fitting; default all available cores. Prediction uses one thread
        so that probabilities are summed in a fixed order (bit-identical runs).
    target:
        ``"label"``: a classifier of 0/1 labels. ``"value"``: a
        :class:`~sklearn.ensemble.RandomForestRegressor` of the log concentration
        (``fit`` takes mg/kg); the spread of the lognormal predictive distribution is
        the standard deviation of the out-of-bag residuals (honest: each residual comes
        from trees that did not see the sample), and ``predict_proba`` needs the limits.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(60, 2, 9, 9)).astype("float32")
    >>> y = (x[:, 0, 3:6, 3:6].mean(axis=(1, 2)) > 0).astype(int)
    >>> model = WindowStatsForest(n_estimators=50).fit(x, y, seed=0)
    >>> model.predict_proba(x).shape
    (60,)
    """

    def __init__(
        self,
        scales: tuple[int, ...] | None = None,
        *,
        n_estimators: int = 300,
        min_samples_leaf: int = 2,
        max_features: str | float = "sqrt",
        n_jobs: int | None = None,
        target: Target = "label",
    ) -> None:
        self.target = target
        self.link_: LogNormalLink | None = None
        self.scales = scales
        self.n_estimators = n_estimators
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.n_jobs = n_jobs
        self.forest_: RandomForestClassifier | TreeEnsemble | None = None
        self.scales_: tuple[int, ...] | None = None

    def fit(
        self,
        patches: PatchesLike,
        labels: np.ndarray,
        *,
        groups: np.ndarray | None = None,
        seed: int = 0,
    ) -> Self:
        """Fit on (N, C, H, H) patches and 0/1 labels (or mg/kg); ``groups`` is not used."""
        del groups  # the forest has no inner validation split
        self.scales_ = tuple(self.scales or window_scales(patches.shape[-1]))
        features = window_statistics(patches, self.scales_)
        if self.target == "value":
            logs = log_values(labels)
            regressor = RandomForestRegressor(
                n_estimators=self.n_estimators,
                min_samples_leaf=self.min_samples_leaf,
                max_features=self.max_features,
                oob_score=True,
                random_state=seed,
                n_jobs=self.n_jobs or available_cpus(),
            ).fit(features, logs)
            residual = logs - regressor.oob_prediction_
            spread = float(np.sqrt(np.nanmean(residual**2))) or 1.0
            self.link_ = LogNormalLink(0.0, 1.0, spread)
            self.forest_ = regressor.set_params(n_jobs=None)
            return self
        forest = RandomForestClassifier(
            n_estimators=self.n_estimators,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            class_weight="balanced",
            random_state=seed,
            n_jobs=self.n_jobs or available_cpus(),
        )
        forest.fit(features, np.asarray(labels).astype(int))
        self.forest_ = forest.set_params(n_jobs=None)
        return self

    def predict_proba(self, patches: PatchesLike, limit: np.ndarray | None = None) -> np.ndarray:
        """Probability of the positive class (of exceeding ``limit``), float64 (N,)."""
        if self.target == "value":
            return self._link().exceedance(self._log_value(patches), required_limit(limit))
        if self.forest_ is None or self.scales_ is None:
            raise NotFittedError("WindowStatsForest is not fitted: call fit first")
        return self.forest_.predict_proba(window_statistics(patches, self.scales_))[:, 1]

    def predict_value(self, patches: PatchesLike) -> np.ndarray | None:
        """Predicted median concentration (mg/kg); None for ``target="label"``."""
        return np.exp(self._log_value(patches)) if self.target == "value" else None

    def _log_value(self, patches: PatchesLike) -> np.ndarray:
        if self.forest_ is None or self.scales_ is None:
            raise NotFittedError("WindowStatsForest is not fitted: call fit first")
        features = window_statistics(patches, self.scales_)
        if isinstance(self.forest_, TreeEnsemble):
            return self.forest_.predict_proba(features)[:, 0]
        return self.forest_.predict(features)

    def _link(self) -> LogNormalLink:
        if self.link_ is None:
            raise NotFittedError("WindowStatsForest is not fitted: call fit first")
        return self.link_

    def to_ensemble(self) -> TreeEnsemble:
        """The fitted forest as plain arrays (what :mod:`soilsource.models.modelio` saves)."""
        if isinstance(self.forest_, TreeEnsemble):
            return self.forest_
        if self.forest_ is None:
            raise NotFittedError("WindowStatsForest is not fitted: call fit first")
        return TreeEnsemble.from_forest(self.forest_)

    @classmethod
    def from_ensemble(
        cls, ensemble: TreeEnsemble, scales: tuple[int, ...], link: LogNormalLink | None = None
    ) -> WindowStatsForest:
        """A predict-only model from saved arrays (and its link, for a regressor)."""
        model = cls(tuple(scales), target="label" if link is None else "value")
        model.scales_ = tuple(scales)
        model.forest_ = ensemble
        model.link_ = link
        return model


# --- torchvision networks with one logit ----------------------------------------------------


class TorchvisionLogit(nn.Module):
    """A torchvision classifier with ``num_classes=1``, returning logits of shape (B,).

    ``architecture`` (the registry name) and ``config`` (the factory's keyword
    arguments) say how to rebuild it, e.g. when loading saved weights.
    """

    def __init__(self, net: nn.Module, architecture: str, config: dict[str, int]) -> None:
        super().__init__()
        self.net = net
        self.architecture = architecture
        self.config = dict(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).reshape(-1)


def _band_conv(old: nn.Conv2d, in_channels: int) -> nn.Conv2d:
    """``old`` with ``in_channels`` inputs, initialised as torchvision initialises it."""
    conv = nn.Conv2d(
        in_channels,
        old.out_channels,
        # torch types these attributes as tuple[int, ...]; a Conv2d's are pairs
        kernel_size=old.kernel_size,  # type: ignore[arg-type]
        stride=old.stride,  # type: ignore[arg-type]
        padding=old.padding,  # type: ignore[arg-type]
        bias=old.bias is not None,
    )
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def resnet18(in_channels: int, patch_px: int | None = None) -> TorchvisionLogit:
    """torchvision ResNet18, random weights (no pretrained weights are reachable here).

    The first convolution takes ``in_channels`` bands; one output logit. ``patch_px``
    is accepted for a uniform factory signature and not used (global pooling).

    >>> sum(p.numel() for p in resnet18(6).parameters())
    11186433
    """
    del patch_px
    net = tvm.resnet18(weights=None, num_classes=1)
    net.conv1 = _band_conv(net.conv1, in_channels)
    return TorchvisionLogit(net, "resnet18", {"in_channels": in_channels})


def mobilenet_v3_small(in_channels: int, patch_px: int | None = None) -> TorchvisionLogit:
    """torchvision MobileNetV3-small, random weights (no pretrained weights reachable here).

    The stem convolution takes ``in_channels`` bands; one output logit.

    >>> sum(p.numel() for p in mobilenet_v3_small(6).parameters())
    1519313
    """
    del patch_px
    net = tvm.mobilenet_v3_small(weights=None, num_classes=1)
    net.features[0][0] = _band_conv(net.features[0][0], in_channels)
    return TorchvisionLogit(net, "mobilenet_v3_small", {"in_channels": in_channels})


def random_forest(in_channels: int, patch_px: int, target: Target = "label") -> WindowStatsForest:
    """The window-statistics random forest for ``patch_px`` patches (bands: any number)."""
    del in_channels
    return WindowStatsForest(window_scales(patch_px), target=target)
