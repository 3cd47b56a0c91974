"""Tests of soilsource.models.baselines: window statistics, forest, torchvision networks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score

from soilsource.learn.training import TrainSettings, fit
from soilsource.models.baselines import (
    TreeEnsemble,
    WindowStatsForest,
    _nanpercentile_rows,
    mobilenet_v3_small,
    resnet18,
    window_feature_names,
    window_scales,
    window_statistics,
)


def test_window_scales():
    assert window_scales(1) == (1,)
    assert window_scales(9) == (1, 3, 9)
    assert window_scales(10) == (1, 3, 9, 10)
    assert window_scales(128) == (1, 3, 9, 27, 81, 128)
    with pytest.raises(ValueError):
        window_scales(0)


def test_window_statistics_match_direct_computation():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 2, 10, 10)).astype("float32")
    scales = window_scales(10)
    feats = window_statistics(x)
    names = window_feature_names(2, scales)
    assert feats.shape == (3, len(names)) and feats.dtype == np.float32
    col = {name: feats[:, i] for i, name in enumerate(names)}
    # the sample's pixel for an even patch is (H // 2, W // 2)
    np.testing.assert_array_equal(col["b1_w1_value"], x[:, 1, 5, 5])
    np.testing.assert_allclose(col["b0_w3_mean"], x[:, 0, 4:7, 4:7].mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_allclose(col["b1_w9_std"], x[:, 1, 1:10, 1:10].std(axis=(1, 2)), rtol=1e-5)
    whole = x[:, 0].reshape(3, -1)
    np.testing.assert_allclose(col["b0_w10_q90"], np.percentile(whole, 90, axis=1), rtol=1e-5)
    np.testing.assert_allclose(col["b1_w10_mean"], x[:, 1].mean(axis=(1, 2)), rtol=1e-5)
    assert "b0_w3_q50" not in col  # no quantiles of nine pixels


def test_window_statistics_ignore_nodata():
    x = np.ones((1, 1, 9, 9), dtype="float32")
    x[0, 0, :, :4] = np.nan
    x[0, 0, 4, 4] = np.nan
    feats = dict(zip(window_feature_names(1, (1, 3, 9)), window_statistics(x)[0], strict=True))
    assert np.isnan(feats["b0_w1_value"])  # the sample's own pixel is missing
    assert feats["b0_w3_mean"] == 1.0 and feats["b0_w9_std"] == 0.0
    assert feats["b0_w9_q50"] == 1.0


def test_nodata_percentiles_are_numpys_bit_for_bit():
    """The grouped percentiles of windows with nodata equal np.nanpercentile exactly,
    including rows of one valid pixel and rows of none (NaN)."""
    rng = np.random.default_rng(3)
    window = rng.normal(size=(40, 3, 121)) * 10.0 ** rng.integers(-3, 4, size=(40, 3, 1))
    window[rng.random(window.shape) < 0.3] = np.nan
    window[0, 0] = np.nan  # no valid pixel
    window[1, 2, 1:] = np.nan  # one valid pixel
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):  # the all-NaN row
        expected = [np.nanpercentile(window, q, axis=-1) for q in (10.0, 50.0, 90.0)]
    np.testing.assert_array_equal(_nanpercentile_rows(window, [10.0, 50.0, 90.0]), expected)
    np.testing.assert_array_equal(_nanpercentile_rows(window, [50.0])[0], expected[1])


def test_window_statistics_reject_bad_shapes():
    with pytest.raises(ValueError):
        window_statistics(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError):
        window_statistics(np.zeros((2, 1, 4, 5)))
    with pytest.raises(ValueError, match="larger"):
        window_statistics(np.zeros((2, 1, 4, 4)), (1, 9))


def test_tree_ensemble_predicts_exactly_like_the_forest_with_missing_values():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 6)).astype("float32")
    y = ((x[:, 0] + 0.5 * x[:, 1] > 0) | np.isnan(x[:, 2])).astype(int)
    x[rng.uniform(size=x.shape) < 0.1] = np.nan
    forest = RandomForestClassifier(n_estimators=40, random_state=0).fit(x, y)
    ens = TreeEnsemble.from_forest(forest)
    assert ens.n_trees == 40 and ens.n_features == 6
    x_new = rng.normal(size=(200, 6)).astype("float32")
    x_new[rng.uniform(size=x_new.shape) < 0.2] = np.nan
    assert np.array_equal(ens.predict_proba(x_new), forest.predict_proba(x_new))
    rebuilt = TreeEnsemble.from_arrays(ens.arrays(), 6)
    assert np.array_equal(rebuilt.predict_proba(x_new), forest.predict_proba(x_new))
    with pytest.raises(ValueError):
        ens.predict_proba(x_new[:, :5])
    with pytest.raises(ValueError, match="missing arrays"):
        TreeEnsemble.from_arrays({"offsets": ens.offsets}, 6)
    with pytest.raises(ValueError, match="feature indices"):
        TreeEnsemble.from_arrays(ens.arrays(), 2)


def context_task(n: int = 200, seed: int = 0):
    """The label depends on the context ring, not on the sample's own pixel."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2, 27, 27)).astype("float32")
    y = (rng.uniform(size=n) < 0.4).astype(int)
    x[y == 1, 1, :9] += 0.8  # a brighter strip at the patch's top edge
    return x, y


def test_window_stats_forest_learns_context_and_is_seeded():
    x, y = context_task()
    xt, yt = context_task(seed=1)
    model = WindowStatsForest(n_estimators=100).fit(x, y, seed=0)
    assert model.forest_.class_weight == "balanced"
    proba = model.predict_proba(xt)
    assert proba.shape == (200,) and roc_auc_score(yt, proba) > 0.85
    again = WindowStatsForest(n_estimators=100).fit(x, y, seed=0).predict_proba(xt)
    other = WindowStatsForest(n_estimators=100).fit(x, y, seed=1).predict_proba(xt)
    assert np.array_equal(proba, again) and not np.array_equal(proba, other)
    assert np.array_equal(model.to_ensemble().predict_proba(window_statistics(xt))[:, 1], proba)
    with pytest.raises(NotFittedError, match="not fitted"):
        WindowStatsForest().predict_proba(xt)
    with pytest.raises(NotFittedError, match="not fitted"):
        WindowStatsForest(target="value").predict_value(xt)


@pytest.mark.parametrize("factory", [mobilenet_v3_small, resnet18])
def test_torchvision_baselines_take_the_bands_and_give_one_logit(factory):
    torch.manual_seed(0)
    net = factory(6, 32)
    out = net(torch.zeros(3, 6, 32, 32))
    assert out.shape == (3,)
    first_conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.in_channels == 6
    torch.manual_seed(1)
    other = factory(6, 32)
    assert not torch.equal(first_conv.weight, next(other.parameters()))  # random, not pretrained


def test_torchvision_baseline_trains_with_fit():
    x, y = context_task(n=40)
    result = fit(
        mobilenet_v3_small(2),
        x,
        y,
        device="cpu",
        settings=TrainSettings(max_epochs=2, batch_size=8, patience=2),
        num_threads=1,
    )
    assert result.epochs_run == 2 and np.isfinite(result.history[-1].train_loss)
