"""Which samples' patches are occluded when a region has many: a stratified subset.

Occlusion costs one forward pass per window position per sample, so it grows with the
number of samples while the region map it feeds does not need them all: the map is a
weighted mean of per-sample maps, and a few thousand samples spread over the region and
its classes estimate that mean closely. With 20,000 samples on a 30 m scene, occluding
every patch was still running after 20 minutes (issue 16); ``explain.max_samples``
(default 2,000) bounds that step while regions of survey size (the demo's 260-340 samples,
Meuse's 155) are explained whole, exactly as before.

The subset is stratified by label and cross-validation fold (the folds are spatial
clusters, so this spreads the subset over the region as well as over clean and
contaminated samples), with proportional allocation by largest remainder, and drawn
with the run's seed: the same run explains the same samples, and a resumed run too.
"""

from __future__ import annotations

import numpy as np


def explained_rows(
    labels: np.ndarray, folds: np.ndarray, max_samples: int | None, seed: int = 0
) -> np.ndarray:
    """Sorted positions of the samples to explain: all when ``max_samples`` is None or
    not fewer than the samples, else a stratified random subset of ``max_samples``.

    Each stratum (label x fold) gets its proportional share, rounded by largest
    remainder so that the shares sum to ``max_samples``.

    >>> labels = np.array([0] * 60 + [1] * 40)
    >>> folds = np.tile([0, 1], 50)
    >>> rows = explained_rows(labels, folds, 10, seed=0)
    >>> len(rows), int(labels[rows].sum()), np.bincount(folds[rows]).tolist()
    (10, 4, [5, 5])
    >>> explained_rows(labels, folds, None).tolist() == list(range(100))
    True
    """
    labels = np.asarray(labels)
    n = len(labels)
    if max_samples is None or n <= max_samples:
        return np.arange(n)
    if max_samples < 1:
        raise ValueError(f"max_samples must be at least 1, got {max_samples}")
    keys = np.stack([labels.astype(np.int64), np.asarray(folds, dtype=np.int64)], axis=1)
    strata, which = np.unique(keys, axis=0, return_inverse=True)
    which = which.reshape(-1)
    sizes = np.bincount(which, minlength=len(strata))
    exact = sizes * max_samples / n
    quota = np.floor(exact).astype(np.int64)
    short = max_samples - int(quota.sum())
    # largest remainders first; ties go to the larger stratum, then the first
    order = np.lexsort((np.arange(len(strata)), -sizes, -(exact - quota)))
    quota[order[:short]] += 1
    rng = np.random.default_rng(seed)
    chosen = [
        rng.choice(np.flatnonzero(which == s), size=int(quota[s]), replace=False)
        for s in range(len(strata))
        if quota[s] > 0
    ]
    return np.sort(np.concatenate(chosen))
