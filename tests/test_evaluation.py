"""Tests of soilsource.learn.evaluation: blocks, folds, AUC with interval, cross-validation."""

from __future__ import annotations

from typing import Self

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from soilsource.errors import InputError
from soilsource.learn.evaluation import (
    MIN_POSITIVES,
    block_ids,
    bootstrap_auc,
    brier_score,
    cross_validate,
    cross_validate_by_region,
    make_folds,
    paired_auc_difference,
    random_folds,
    roc_auc,
    spatial_folds,
)
from soilsource.learn.training import TrainSettings
from soilsource.models.baselines import WindowStatsForest


def spatial_task(n: int = 120, px: int = 8, seed: int = 0, extent: float = 2000.0):
    """Samples on a plane; contamination more likely in the east, and positives' patches
    carry a bright blob (the source) in band 0."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, extent, size=(n, 2))
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-(xy[:, 0] - extent / 2) / 300))).astype(int)
    x = rng.normal(size=(n, 2, px, px)).astype("float32")
    for i in np.flatnonzero(y):
        r, c = rng.integers(0, px - 3, size=2)
        x[i, 0, r : r + 3, c : c + 3] += 2.0
    return x, y, xy


class Recorder:
    """A probe estimator: remembers which samples (coded in pixel [0, 0, 0]) it was fit on,
    and predicts band 0's mean."""

    log: list[np.ndarray] = []  # noqa: RUF012 - shared on purpose across fold instances

    def fit(self, patches, labels, *, groups=None, seed=0) -> Self:
        Recorder.log.append(patches[:, 1, 0, 0].astype(int))
        return self

    def predict_proba(self, patches):
        return 1 / (1 + np.exp(-patches[:, 0].mean(axis=(1, 2))))


def coded(x: np.ndarray) -> np.ndarray:
    x = x.copy()
    x[:, 1, 0, 0] = np.arange(len(x))
    return x


def tiny_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 6, 3),
        nn.ReLU(),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 1),
        nn.Flatten(0),
    )


FAST = TrainSettings(max_epochs=8, batch_size=16, patience=3, lr=1e-2)


# --- blocks and folds -----------------------------------------------------------------------


def test_block_ids_are_anchored_at_the_origin_and_split_regions():
    xy = np.array([[0.0, 0.0], [99.9, 99.9], [100.0, 0.0], [-0.1, 0.0], [50.0, 50.0]])
    ids = block_ids(xy, 100.0)
    assert ids[0] == ids[1] == ids[4]
    assert len({ids[0], ids[2], ids[3]}) == 3
    by_region = block_ids(xy, 100.0, np.array(["a", "a", "a", "a", "b"]))
    assert by_region[4] != by_region[0]
    with pytest.raises(ValueError):
        block_ids(xy, 0.0)
    with pytest.raises(ValueError):
        block_ids(np.array([[np.nan, 0.0]]), 10.0)


def test_spatial_folds_never_share_a_block_and_are_balanced():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 5000, size=(400, 2))
    y = (rng.uniform(size=400) < 0.3).astype(int)
    fold = spatial_folds(y, xy, block_m=500.0, folds=5, seed=0)
    blocks = block_ids(xy, 500.0)
    for b in np.unique(blocks):
        assert len(set(fold[blocks == b])) == 1
    sizes = np.bincount(fold)
    positives = np.bincount(fold, weights=y)
    assert len(sizes) == 5
    assert sizes.max() - sizes.min() <= 0.25 * sizes.mean()
    assert positives.max() - positives.min() <= 0.35 * positives.mean()
    assert np.array_equal(fold, spatial_folds(y, xy, block_m=500.0, folds=5, seed=0))
    assert not np.array_equal(fold, spatial_folds(y, xy, block_m=500.0, folds=5, seed=1))


def test_spatial_folds_with_few_blocks():
    xy = np.array([[10.0, 10.0], [20.0, 20.0], [600.0, 10.0], [610.0, 20.0]] * 5)
    y = np.array([0, 1] * 10)
    fold = spatial_folds(y, xy, block_m=500.0, folds=5, seed=0)  # two blocks: two folds
    assert sorted(set(fold.tolist())) == [0, 1]
    with pytest.raises(InputError, match="one 5000 m block"):
        spatial_folds(y, xy, block_m=5000.0, folds=5)


def test_random_and_pooled_folds_are_stratified():
    y = np.array([0] * 40 + [1] * 10)
    fold = random_folds(y, folds=5, seed=0)
    assert np.bincount(fold, weights=y).tolist() == [2.0] * 5
    regions = np.array(["a"] * 25 + ["b"] * 25)
    y2 = np.array(([0] * 20 + [1] * 5) * 2)
    fold2 = make_folds(y2, cv="random", folds=5, seed=0, regions=regions)
    for r in ("a", "b"):
        sel = regions == r
        assert np.bincount(fold2[sel], weights=y2[sel]).tolist() == [1.0] * 5


def test_make_folds_rejects_bad_settings():
    y = np.array([0, 1] * 5)
    with pytest.raises(InputError, match="folds"):
        make_folds(y, cv="random", folds=1)
    with pytest.raises(InputError, match="only 10 samples"):
        make_folds(y, cv="random", folds=20)
    with pytest.raises(InputError, match="cv"):
        make_folds(y, cv="leave-one-out", folds=2)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="block_m"):
        make_folds(y, np.zeros((10, 2)), cv="spatial", folds=2)


# --- AUC and its interval -------------------------------------------------------------------


def test_bootstrap_auc_matches_roc_auc_score_on_each_resample():
    rng = np.random.default_rng(0)
    y = np.array([0] * 30 + [1] * 12)
    p = np.round(rng.uniform(size=42) + 0.3 * y, 1)  # rounded: ties on purpose
    aucs = bootstrap_auc(y, p, n_boot=50, seed=4)
    # the same resample counts, drawn the same way, through scikit-learn
    rng = np.random.default_rng(4)
    pos, neg = p[y == 1], p[y == 0]
    w_pos = rng.multinomial(12, np.full(12, 1 / 12), size=50)
    w_neg = rng.multinomial(30, np.full(30, 1 / 30), size=50)
    for b in range(50):
        scores = np.concatenate([np.repeat(pos, w_pos[b]), np.repeat(neg, w_neg[b])])
        truth = np.r_[np.ones(12), np.zeros(30)]
        assert aucs[b] == pytest.approx(roc_auc_score(truth, scores), abs=1e-12)


def test_roc_auc_interval_contains_the_auc_and_is_seeded():
    rng = np.random.default_rng(1)
    y = (rng.uniform(size=150) < 0.4).astype(int)
    p = rng.uniform(size=150) + 0.4 * y
    r = roc_auc(y, p, seed=0)
    assert r.auc == pytest.approx(roc_auc_score(y, p))
    assert r.ci95[0] < r.auc < r.ci95[1]
    assert 0.05 < r.ci95[1] - r.ci95[0] < 0.4
    assert roc_auc(y, p, seed=0) == r
    assert r.to_dict() == {"n": 150, "n_pos": int(y.sum()), "auc": r.auc, "auc_ci95": list(r.ci95)}


def test_roc_auc_is_null_with_a_reason():
    one_class = roc_auc(np.zeros(20, int), np.linspace(0, 1, 20))
    assert one_class.auc is None and one_class.ci95 is None
    assert one_class.reason == "one class only: 0 positive of 20"
    assert one_class.to_dict()["auc_null_reason"] == one_class.reason
    y = np.array([1] * (MIN_POSITIVES - 1) + [0] * 30)
    few = roc_auc(y, np.linspace(0, 1, len(y)))
    assert few.auc is None and "too few" in few.reason
    y = np.array([1] * 10 + [0] * 10)
    p = np.r_[np.full(10, 0.9), np.full(9, 0.1), np.nan]
    assert "no out-of-fold prediction for 1" in roc_auc(y, p).reason


# --- cross-validation -----------------------------------------------------------------------


def test_cross_validate_folds_hold_whole_blocks_and_buffer_removes_neighbours():
    x, y, xy = spatial_task(n=150)
    Recorder.log = []
    kwargs = dict(folds=5, cv="spatial", block_m=400.0, patch_m=150.0, seed=0, final=False)
    result = cross_validate(Recorder, coded(x), y, xy, buffer_m=150.0, **kwargs)
    assert len(Recorder.log) == 5
    blocks = block_ids(xy, 400.0)
    for k, train in enumerate(Recorder.log):
        test = np.flatnonzero(result.fold == k)
        assert not set(blocks[train]) & set(blocks[test])
        gap = np.abs(xy[train][:, None, :] - xy[test][None, :, :]).max(axis=-1)
        assert gap.min() >= 150.0
        assert result.fold_info[k]["dropped_by_buffer"] > 0
    assert result.overlap_share == 0.0
    assert np.isfinite(result.proba).all() and set(result.fold.tolist()) == set(range(5))

    no_buffer = cross_validate(Recorder, coded(x), y, xy, **kwargs)
    assert no_buffer.overlap_share > 0.0  # blocks alone do not keep patches apart


def test_cross_validate_learns_and_is_repeatable_bit_for_bit():
    x, y, xy = spatial_task(n=90)
    kwargs = dict(folds=3, block_m=500.0, seed=0, device="cpu", settings=FAST, num_threads=1)
    a = cross_validate(tiny_cnn, x, y, xy, **kwargs)
    b = cross_validate(tiny_cnn, x, y, xy, **kwargs, final=False)
    assert np.array_equal(a.proba, b.proba)  # bit for bit
    assert np.array_equal(a.fold, b.fold)
    assert a.overall.auc > 0.8
    assert not a.optimistic and a.cv == "spatial"
    assert a.final is not None and a.final.predict_proba(x[:3]).shape == (3,)
    assert b.final is None
    assert {"best_epoch", "epochs", "seconds"} <= set(a.fold_info[0])
    c = cross_validate(tiny_cnn, x, y, xy, **{**kwargs, "seed": 1}, final=False)
    assert not np.array_equal(a.proba, c.proba)


def test_cross_validate_random_is_marked_optimistic():
    x, y, _ = spatial_task(n=80)
    forest = lambda: WindowStatsForest(n_estimators=30)  # noqa: E731
    r = cross_validate(forest, x, y, cv="random", folds=4, seed=0, final=False)
    assert r.optimistic and r.block_m is None
    metrics = r.metrics()
    assert metrics["overall"]["optimistic"] is True
    assert set(metrics["regions"]) == {"all"}
    assert metrics["regions"]["all"]["auc"] == r.overall.auc > 0.7


def test_pooled_cross_validation_reports_each_region():
    x, y, xy = spatial_task(n=160, seed=2)
    regions = np.array(["north"] * 80 + ["south"] * 80)
    forest = lambda: WindowStatsForest(n_estimators=30)  # noqa: E731
    r = cross_validate(forest, x, y, xy, regions, folds=4, block_m=500.0, seed=0)
    assert list(r.regions) == ["north", "south"]
    assert r.regions["north"].n == 80 and r.regions["south"].n == 80
    for name in ("north", "south"):  # every region spread over the folds
        assert len(set(r.fold[regions == name].tolist())) == 4
    assert r.overall.n == 160 and r.final is not None


def test_by_region_with_one_class_region_gives_null_and_no_model():
    x, y, xy = spatial_task(n=120)
    y = y.copy()
    regions = np.array(["a"] * 60 + ["b"] * 60)
    y[60:] = 0
    forest = lambda: WindowStatsForest(n_estimators=20)  # noqa: E731
    out = cross_validate_by_region(forest, x, y, xy, regions, folds=3, block_m=500.0, seed=0)
    assert out["b"].regions["b"].auc is None
    assert out["b"].regions["b"].reason == "one class only: 0 positive of 60"
    assert out["b"].final is None and np.isnan(out["b"].proba).all()
    assert (out["b"].fold == -1).all()
    assert out["a"].regions["a"].auc is not None and out["a"].final is not None
    all_positive = cross_validate(forest, x[:30], np.ones(30, int), xy[:30], block_m=500.0)
    assert all_positive.overall.reason == "one class only: 30 positive of 30"
    assert all_positive.final is None


def test_cross_validate_rejects_a_non_model_factory():
    x, y, xy = spatial_task(n=40)
    with pytest.raises(TypeError, match="not a module or estimator"):
        cross_validate(lambda: "model", x, y, xy, block_m=500.0, folds=2)
    with pytest.raises(ValueError, match="labels"):
        cross_validate(tiny_cnn, x[:10], y, xy, block_m=500.0)


def test_torch_is_seeded_before_each_factory_call():
    x, y, xy = spatial_task(n=60)
    weights = []

    def factory():
        model = tiny_cnn()
        weights.append(model[0].weight.detach().clone())
        return model

    kwargs = dict(folds=2, block_m=500.0, seed=0, device="cpu", num_threads=1, final=False)
    cross_validate(factory, x, y, xy, settings=TrainSettings(max_epochs=1), **kwargs)
    torch.manual_seed(123)  # whatever the caller did before
    cross_validate(factory, x, y, xy, settings=TrainSettings(max_epochs=1), **kwargs)
    assert torch.equal(weights[0], weights[2]) and torch.equal(weights[1], weights[3])
    assert not torch.equal(weights[0], weights[1])


def test_a_fold_whose_training_part_has_one_class_predicts_its_share():
    xy = np.array([[100.0, 100.0]] * 10 + [[900.0, 100.0]] * 10)
    y = np.array([1] * 10 + [0] * 10)  # positives all in one block
    x = np.zeros((20, 2, 4, 4), dtype="float32")
    r = cross_validate(Recorder, x, y, xy, folds=2, block_m=500.0, final=False)
    assert np.array_equal(r.proba, 1.0 - y)  # trained on the other block's class only
    assert r.overall.auc is not None and r.overall.auc == 0.0


def test_paired_auc_difference_is_the_difference_with_a_paired_interval():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    good = y + rng.normal(0, 0.6, 120)
    noisy = good + rng.normal(0, 0.3, 120)  # the same model, a little worse
    diff, lo, hi = paired_auc_difference(y, good, noisy, n_boot=500, seed=1)
    assert diff == pytest.approx(roc_auc_score(y, good) - roc_auc_score(y, noisy))
    assert lo <= diff <= hi
    # pairing: the interval of the difference is narrower than either AUC's own interval
    single = np.percentile(bootstrap_auc(y, good, n_boot=500, seed=1), [2.5, 97.5])
    assert hi - lo < single[1] - single[0]
    assert paired_auc_difference(y, good, np.full(120, np.nan)) is None
    assert paired_auc_difference(np.zeros(5), np.ones(5), np.ones(5)) is None


def test_brier_score_ignores_missing_predictions():
    assert brier_score(np.array([0, 1, 1]), np.array([0.0, 1.0, np.nan])) == 0.0
    assert brier_score(np.array([1]), np.array([np.nan])) is None
