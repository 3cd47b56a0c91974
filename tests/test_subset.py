"""explain.subset: the stratified subset of samples whose patches are occluded."""

from __future__ import annotations

import numpy as np
import pytest

from soilsource.explain.subset import explained_rows


def _survey(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.random(n) < 0.3).astype(int), rng.integers(0, 5, n)


def test_every_sample_when_few_or_unbounded():
    labels, folds = _survey(300)
    assert explained_rows(labels, folds, 2000).tolist() == list(range(300))
    assert explained_rows(labels, folds, None).tolist() == list(range(300))
    assert explained_rows(labels, folds, 300).tolist() == list(range(300))


def test_subset_keeps_each_stratum_share():
    labels, folds = _survey(20_000)
    rows = explained_rows(labels, folds, 2000, seed=3)
    assert len(rows) == 2000 and len(np.unique(rows)) == 2000
    assert np.all(np.diff(rows) > 0)  # sorted: table order
    for label in (0, 1):
        for fold in range(5):
            whole = np.mean((labels == label) & (folds == fold))
            part = np.mean((labels[rows] == label) & (folds[rows] == fold))
            assert abs(part - whole) <= 1 / 2000  # largest remainder: within one sample


def test_same_seed_same_subset_other_seed_other_subset():
    labels, folds = _survey(5000)
    first = explained_rows(labels, folds, 500, seed=1)
    assert np.array_equal(first, explained_rows(labels, folds, 500, seed=1))
    assert not np.array_equal(first, explained_rows(labels, folds, 500, seed=2))


def test_a_rare_stratum_is_not_lost_to_rounding_when_it_has_the_largest_remainder():
    labels = np.array([1] * 3 + [0] * 97)
    folds = np.zeros(100, int)
    rows = explained_rows(labels, folds, 20, seed=0)
    assert len(rows) == 20 and labels[rows].sum() == 1  # 0.6 rounds up, 19.4 down


def test_zero_is_refused():
    labels, folds = _survey(10)
    with pytest.raises(ValueError, match="at least 1"):
        explained_rows(labels, folds, 0)
