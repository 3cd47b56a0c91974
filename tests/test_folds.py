"""Fold designs: kNNDM (Linnenbrink et al. 2024), spatial and buffered blocks, random."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from soilsource.errors import InputError
from soilsource.learn.evaluation import cross_validate, fold_design
from soilsource.learn.folds import KNNDM, RandomKFold, SpatialBlocks, nearest_other_fold


class Mean:
    """A model that needs no training: the patch mean is its score."""

    def fit(self, patches, labels, *, groups=None, seed=0):
        assert len(labels) >= 10  # never trained on a handful of samples
        return self

    def predict_proba(self, patches):
        return patches.mean(axis=(1, 2, 3))


def _grid(n: int, extent: float) -> np.ndarray:
    axis = np.linspace(0, extent, n)
    return np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2)


def _scattered(seed: int, n: int, extent: float):
    """Uniform samples, labels by the west-east half, and random one-band patches."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, extent, size=(n, 2))
    y = (xy[:, 0] > extent / 2).astype(int)
    return xy, y, rng.normal(size=(n, 1, 4, 4)).astype(np.float32)


def _clustered(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 10_000, size=(12, 2))
    return (centres[:, None] + rng.normal(0, 150, size=(12, 25, 2))).reshape(-1, 2)


def test_nearest_other_fold_is_the_test_to_training_distance():
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 100, size=(50, 2))
    fold = rng.integers(0, 3, 50)
    got = nearest_other_fold(xy, fold)
    for i in range(50):
        others = xy[fold != fold[i]]
        assert got[i] == pytest.approx(np.min(np.hypot(*(others - xy[i]).T)))


def test_knndm_on_clustered_samples_matches_the_prediction_distances_better_than_random():
    xy = _clustered()
    y = np.zeros(len(xy), int)
    pred = _grid(40, 10_000)
    gij = cKDTree(xy).query(pred)[0]
    design = KNNDM(5, 0, prediction_xy=pred)
    fold = design.fold_ids(xy, y)
    info = design.describe()
    assert info["method"] == "knndm" and info["ks_p_value"] < 0.05
    assert sorted(set(fold.tolist())) == [0, 1, 2, 3, 4]
    assert np.bincount(fold).max() <= 0.5 * len(xy)
    random = RandomKFold(5, 0).fold_ids(xy, y)
    from scipy.stats import wasserstein_distance

    w_knndm = wasserstein_distance(nearest_other_fold(xy, fold), gij)
    w_random = wasserstein_distance(nearest_other_fold(xy, random), gij)
    assert info["W"] == pytest.approx(w_knndm, abs=0.01)
    assert w_knndm < 0.5 * w_random  # random folds test far too close to training
    # test points lie much farther from training than under random folds
    assert np.median(nearest_other_fold(xy, fold)) > 3 * np.median(nearest_other_fold(xy, random))


def test_knndm_uses_random_folds_when_sampling_already_matches_prediction():
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 1000, size=(200, 2))
    # The map is wanted only near the samples: prediction is closer than samples are to
    # each other, so random folds already test at least as far out as the map needs.
    pred = np.repeat(xy, 5, axis=0) + rng.normal(0, 5, size=(1000, 2))
    design = KNNDM(5, 3, prediction_xy=pred)
    fold = design.fold_ids(xy, rng.integers(0, 2, 200))
    assert design.describe()["method"] == "random"
    assert design.describe()["ks_p_value"] >= 0.05
    assert sorted(set(fold.tolist())) == [0, 1, 2, 3, 4]


def test_knndm_is_repeatable_and_seeded():
    xy, pred = _clustered(), _grid(30, 10_000)
    y = np.zeros(len(xy), int)
    a = KNNDM(5, 0, prediction_xy=pred).fold_ids(xy, y)
    b = KNNDM(5, 0, prediction_xy=pred).fold_ids(xy, y)
    assert np.array_equal(a, b)


def test_knndm_above_the_ward_limit_clusters_centroids(monkeypatch):
    import soilsource.learn.folds as folds

    monkeypatch.setattr(folds, "MAX_WARD", 50)
    xy, pred = _clustered(), _grid(30, 10_000)
    design = KNNDM(4, 0, prediction_xy=pred, n_candidates=20)
    fold = design.fold_ids(xy, np.zeros(len(xy), int))
    assert design.describe()["method"] == "knndm"
    assert len(set(fold.tolist())) == 4


def test_split_yields_disjoint_train_and_test_covering_every_sample():
    xy = _clustered()
    seen = np.zeros(len(xy), int)
    for train, test in KNNDM(5, 0, prediction_xy=_grid(30, 10_000)).split(xy):
        assert not set(train) & set(test)
        seen[test] += 1
    assert (seen == 1).all()


def test_fold_design_names_and_bad_settings():
    assert isinstance(fold_design("random"), RandomKFold)
    assert fold_design("buffered", block_m=500.0, buffer_m=500.0).name == "buffered"
    assert fold_design("spatial", block_m=500.0).name == "spatial"
    with pytest.raises(InputError, match="knndm, spatial, buffered, random"):
        fold_design("loo")
    with pytest.raises(InputError, match="at least 2"):
        fold_design("random", folds=1)
    with pytest.raises(ValueError, match="prediction_xy"):
        fold_design("knndm")


def test_buffered_cv_leaves_no_test_patch_overlapping_a_training_patch():
    xy, y, patches = _scattered(3, 120, 5000.0)

    spatial = cross_validate(
        Mean, patches, y, xy, cv="spatial", block_m=1000.0, patch_m=400.0, n_boot=10
    )
    buffered = cross_validate(
        Mean, patches, y, xy, cv="buffered", block_m=1000.0, patch_m=400.0, n_boot=10
    )
    assert buffered.buffer_m == 400.0 and buffered.design["design"] == "buffered"
    assert buffered.overlap_share == 0.0 < spatial.overlap_share
    assert sum(f.get("dropped_by_buffer", 0) for f in buffered.fold_info) > 0


def test_spatial_blocks_describe_their_distances():
    rng = np.random.default_rng(4)
    xy = rng.uniform(0, 5000, size=(100, 2))
    design = SpatialBlocks(4, 0, block_m=1250.0)
    fold = design.fold_ids(xy, rng.integers(0, 2, 100))
    info = design.describe()
    assert info["design"] == "spatial" and info["folds"] == len(set(fold.tolist()))
    assert info["test_to_train_m"]["q50"] > 0


def test_a_buffer_that_leaves_too_few_training_samples_predicts_nothing_for_that_fold():
    xy, y, patches = _scattered(5, 60, 3000.0)

    result = cross_validate(
        Mean, patches, y, xy, cv="buffered", block_m=1000.0, patch_m=2500.0, n_boot=10
    )
    assert np.isnan(result.proba).any()
    assert result.overall.auc is None and "no out-of-fold prediction" in result.overall.reason
