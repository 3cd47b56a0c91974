"""The concentration target: log-normal link, value training, and the forest regressor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from soilsource.data.target import MIN_VALUE, LogNormalLink
from soilsource.learn.training import Standardized, TorchPatchClassifier, TrainSettings, fit
from soilsource.models import SILICNet
from soilsource.models.baselines import WindowStatsForest
from soilsource.models.modelio import load_model, save_model


def test_link_round_trips_and_gives_lognormal_exceedance():
    values = np.array([0.05, 0.1, 0.3, 0.9, 2.7])
    link = LogNormalLink.fit(values, sigma_z=0.4)
    z = link.encode(values)
    assert z.mean() == pytest.approx(0.0, abs=1e-6) and z.std() == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(link.median(z), values, rtol=1e-5)
    # P(value > limit) of a lognormal with median exp(mu) and log-sd sigma
    mu, limit = link.log_value(z[2:3]), 0.5
    expected = 1 - norm.cdf((np.log(limit) - mu) / link.sigma)
    assert link.exceedance(z[2:3], limit) == pytest.approx(expected)
    assert link.exceedance(np.array([0.0]), np.exp(link.mean))[0] == pytest.approx(0.5)
    assert LogNormalLink.from_dict(link.to_dict()) == link


def test_zero_readings_are_floored_not_infinite():
    link = LogNormalLink.fit(np.array([0.0, 0.1, 0.2]))
    assert np.isfinite(link.encode(np.array([0.0]))).all()
    assert link.encode(np.array([0.0]))[0] == link.encode(np.array([MIN_VALUE]))[0]


def _data(n: int = 96, seed: int = 0):
    """Patches whose centre brightness sets the log concentration, plus noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2, 16, 16)).astype(np.float32)
    signal = x[:, 0, 6:10, 6:10].mean(axis=(1, 2))
    values = np.exp(0.2 + 1.5 * signal + rng.normal(0, 0.2, n))
    return x, values


def test_value_training_learns_the_concentration_and_a_spread():
    x, values = _data()
    torch.manual_seed(0)
    model = TorchPatchClassifier(
        SILICNet(2, patch_px=16),
        device="cpu",
        target="value",
        settings=TrainSettings(max_epochs=30),
    ).fit(x, values, seed=0)
    assert model.fit_result_.sigma_z is not None and 0 < model.link_.sigma < 2
    pred = model.predict_value(x)
    assert np.corrcoef(np.log(pred), np.log(values))[0, 1] > 0.7
    limits = np.full(len(values), np.median(values))
    prob = model.predict_proba(x, limits)
    assert ((prob >= 0) & (prob <= 1)).all()
    assert roc_auc_score(values > limits, prob) > 0.8
    with pytest.raises(ValueError, match="limit"):
        model.predict_proba(x)


def test_each_sample_is_scored_against_its_own_limit():
    x, values = _data(64, 1)
    torch.manual_seed(0)
    model = Standardized(
        TorchPatchClassifier(
            SILICNet(2, 16), device="cpu", target="value", settings=TrainSettings(max_epochs=3)
        )
    ).fit(x, values)
    low = model.predict_proba(x, np.full(64, 0.01))
    high = model.predict_proba(x, np.full(64, 100.0))
    assert (low > high).all()


def test_members_train_as_an_ensemble_and_regress_too():
    x, values = _data(64, 2)
    torch.manual_seed(0)
    net = SILICNet(2, 16, members=3, width=8)
    result = fit(
        net, x, LogNormalLink.fit(values).encode(values), device="cpu", target="value",
        settings=TrainSettings(max_epochs=4),
    )  # fmt: skip
    assert result.sigma_z > 0 and result.epochs_run == 4


def test_min_steps_lengthens_training_of_small_sets():
    x, values = _data(40, 3)
    net = SILICNet(2, 16)
    result = fit(
        net, x, LogNormalLink.fit(values).encode(values), device="cpu", target="value",
        settings=TrainSettings(max_epochs=2, min_steps=12, batch_size=20),
    )  # fmt: skip
    assert result.epochs_run == 6  # 2 batches an epoch, 12 steps


def test_value_early_stopping_uses_a_split_by_halves_of_the_target():
    x, values = _data(60, 4)
    result = fit(
        SILICNet(2, 16), x, LogNormalLink.fit(values).encode(values), device="cpu",
        target="value", settings=TrainSettings(max_epochs=3, patience=1),
    )  # fmt: skip
    assert len(result.val_index) > 0 and result.history[0].val_auc is None


def test_forest_regressor_takes_its_spread_from_out_of_bag_residuals(tmp_path):
    x, values = _data(120, 5)
    forest = WindowStatsForest(n_estimators=60, target="value").fit(x, values, seed=0)
    logs = np.log(values)
    oob = forest.forest_.oob_prediction_
    assert forest.link_.sigma == pytest.approx(np.sqrt(np.mean((logs - oob) ** 2)))
    pred = forest.predict_value(x)
    assert np.corrcoef(np.log(pred), logs)[0, 1] > 0.5
    limits = np.full(120, 1.0)
    prob = forest.predict_proba(x, limits)
    # saved and loaded without pickle, it predicts the same, link included
    path = save_model(tmp_path / "rf.npz", forest)
    saved = load_model(path)
    assert saved.link == forest.link_
    assert np.allclose(saved.model.predict_proba(x, limits), prob)
    assert np.allclose(saved.model.predict_value(x), pred)


def test_torch_value_model_saves_its_link(tmp_path):
    x, values = _data(40, 6)
    torch.manual_seed(0)
    model = TorchPatchClassifier(
        SILICNet(2, 16), device="cpu", target="value", settings=TrainSettings(max_epochs=1)
    ).fit(x, values)
    saved = load_model(save_model(tmp_path / "m.pt", model))
    assert saved.link == model.link_
    with torch.no_grad():
        z = saved.model(torch.from_numpy(x[:3])).numpy()
    assert np.allclose(saved.link.median(z), model.predict_value(x[:3]), rtol=1e-5)
