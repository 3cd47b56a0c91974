"""Tests of soilsource.learn.training: augmentation group, splits, fitting, repeatability."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score
from torch import nn

from soilsource.errors import InputError
from soilsource.learn import training
from soilsource.learn.training import (
    DIHEDRAL_ORDER,
    Standardized,
    TorchPatchClassifier,
    TrainSettings,
    augment,
    available_cpus,
    derive_seed,
    dihedral,
    fit,
    inner_split,
    predict_proba,
    resolve_device,
    shift,
)

FAST = TrainSettings(max_epochs=12, batch_size=16, patience=4, lr=1e-2, monitor="auc")


def blob_task(n: int = 96, px: int = 12, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Positives carry a bright 3x3 blob at a random place in band 0; negatives do not."""
    rng = np.random.default_rng(seed)
    y = np.zeros(n, dtype=int)
    y[rng.permutation(n)[: n // 3]] = 1
    x = rng.normal(size=(n, 2, px, px)).astype("float32")
    for i in np.flatnonzero(y):
        r, c = rng.integers(0, px - 3, size=2)
        x[i, 0, r : r + 3, c : c + 3] += 2.0
    return x, y


def small_cnn(seed: int = 0, batchnorm: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Conv2d(2, 8, 3), nn.ReLU(), nn.AdaptiveMaxPool2d(1), nn.Flatten()]
    if batchnorm:  # fails on a batch of one in training mode
        layers.append(nn.BatchNorm1d(8))
    layers += [nn.Linear(8, 1), nn.Flatten(0)]
    return nn.Sequential(*layers)


# --- the dihedral group ---------------------------------------------------------------------


def test_dihedral_is_exactly_the_eight_rotations_and_flips():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    expected = []
    for flip in (False, True):
        for k in range(4):
            y = torch.rot90(x, k, dims=(-2, -1))
            expected.append(torch.flip(y, dims=(-1,)) if flip else y)
    got = [dihedral(x, k) for k in range(DIHEDRAL_ORDER)]
    assert torch.equal(got[0], x)  # identity first
    # all distinct
    keys = {tuple(g.flatten().tolist()) for g in got}
    assert len(keys) == 8
    assert keys == {tuple(e.flatten().tolist()) for e in expected}
    # closed under composition: a group, not just eight maps
    for a, b in itertools.product(range(8), repeat=2):
        assert tuple(dihedral(dihedral(x, a), b).flatten().tolist()) in keys
    # the transpose (a reflection not built in directly) is one of them
    assert tuple(x.transpose(-1, -2).flatten().tolist()) in keys


def test_dihedral_rejects_out_of_range():
    with pytest.raises(ValueError):
        dihedral(torch.zeros(1, 1, 2, 2), 8)


def test_augment_applies_one_group_element_per_patch_and_uses_all():
    x = torch.arange(64 * 9, dtype=torch.float32).reshape(64, 1, 3, 3)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(3):
        out = augment(x, g)
        for i in range(len(x)):
            matches = [k for k in range(8) if torch.equal(out[i], dihedral(x[i], k))]
            assert len(matches) == 1
            seen.add(matches[0])
    assert seen == set(range(8))
    # the same generator state gives the same augmentation
    a = augment(x, torch.Generator().manual_seed(5))
    b = augment(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_shift_moves_each_patch_by_one_offset_within_the_limit_and_fills_with_no_data():
    x = torch.arange(1, 64 * 2 * 7 * 7 + 1, dtype=torch.float32).reshape(64, 2, 7, 7)
    out = shift(x, torch.Generator().manual_seed(0), 2)
    seen = set()
    for i in range(len(x)):
        matches = []
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                moved = torch.zeros_like(x[i])
                moved[:, max(0, dy) : 7 + min(0, dy), max(0, dx) : 7 + min(0, dx)] = x[
                    i, :, max(0, -dy) : 7 - max(0, dy), max(0, -dx) : 7 - max(0, dx)
                ]
                if torch.equal(out[i], moved):
                    matches.append((dy, dx))
        assert len(matches) == 1  # one offset, the same for every band
        seen.add(matches[0])
    assert len(seen) > 15  # of the 25 offsets, most drawn among 64 patches
    assert torch.equal(shift(x, torch.Generator().manual_seed(0), 0), x)
    with pytest.raises(ValueError, match="shift_px"):
        shift(x, torch.Generator(), -1)
    with pytest.raises(ValueError, match="shift_px"):
        TrainSettings(shift_px=-1)


def test_shift_after_augment_rotates_then_moves():
    x = torch.randn(16, 1, 6, 6)
    rotated = augment(x, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    both = shift(augment(x, g), g, 1)  # as fit applies them
    # the same draws of rotation, then shifts; moved patches lose at most one row and column
    kept = (both != 0).reshape(16, -1).sum(1)
    assert torch.all(kept >= 25) and torch.any(kept < 36)
    for i in range(16):
        inside = both[i] != 0
        assert torch.isin(both[i][inside], rotated[i]).all()


# --- small pieces ---------------------------------------------------------------------------


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InputError, match=r"compute\.device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="no CUDA"):
            resolve_device("cuda")


def test_available_cpus_and_derive_seed():
    assert 1 <= available_cpus() <= (torch.get_num_threads() + 1024)
    assert derive_seed(3, 1) == derive_seed(3, 1)
    assert len({derive_seed(3, k) for k in range(10)}) == 10


def test_inner_split_keeps_blocks_whole_and_is_stratified():
    rng = np.random.default_rng(1)
    groups = rng.integers(0, 20, size=200)
    y = (rng.uniform(size=200) < 0.3).astype(int)
    train, val, kind = inner_split(y, groups, val_fraction=0.2, seed=0)
    assert kind == "spatial"
    assert not set(groups[train]) & set(groups[val])
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(200))
    assert 0.1 < len(val) / 200 < 0.3
    assert 0 < y[val].mean() < 1
    again = inner_split(y, groups, val_fraction=0.2, seed=0)
    assert np.array_equal(again[1], val)


def test_inner_split_falls_back():
    y = np.array([0, 1] * 10)
    assert inner_split(y, np.zeros(20, int), seed=0)[2] == "random"  # one block only
    train, val, kind = inner_split(np.array([0] * 9 + [1]), seed=0)  # one positive
    assert kind == "none" and len(val) == 0 and len(train) == 10


# --- fitting --------------------------------------------------------------------------------


def test_fit_learns_a_spatial_pattern_and_restores_best_weights():
    x, y = blob_task(n=120)
    xt, yt = blob_task(n=60, seed=1)
    result = fit(small_cnn(), x, y, seed=0, device="cpu", settings=FAST, num_threads=1)
    proba = predict_proba(result.model, xt, "cpu")
    assert roc_auc_score(yt, proba) > 0.9
    assert 1 <= result.best_epoch <= result.epochs_run <= FAST.max_epochs
    assert result.val_split == "random"
    n_train_pos = y[result.train_index].sum()
    assert result.pos_weight == pytest.approx((len(result.train_index) - n_train_pos) / n_train_pos)
    # the model handed back is the best epoch's, by validation AUC then loss
    best = result.history[result.best_epoch - 1]
    assert best.val_auc == max(h.val_auc for h in result.history)
    val_auc = roc_auc_score(
        y[result.val_index], predict_proba(result.model, x[result.val_index], "cpu")
    )
    assert val_auc == pytest.approx(best.val_auc)


def test_fit_monitor_loss_restores_lowest_validation_loss():
    x, y = blob_task(n=80)
    settings = TrainSettings(max_epochs=6, batch_size=16, patience=10, monitor="loss", lr=1e-2)
    result = fit(small_cnn(), x, y, seed=0, device="cpu", settings=settings, num_threads=1)
    losses = [h.val_loss for h in result.history]
    assert result.best_epoch == int(np.argmin(losses)) + 1
    assert result.epochs_run == 6 and not result.stopped_early


def test_fit_without_patience_trains_every_sample_for_max_epochs():
    x, y = blob_task(n=64)
    settings = TrainSettings(max_epochs=4, batch_size=16, patience=None)
    result = fit(small_cnn(), x, y, seed=0, device="cpu", settings=settings, num_threads=1)
    assert result.val_split == "none" and len(result.val_index) == 0
    assert np.array_equal(result.train_index, np.arange(64))
    assert result.epochs_run == result.best_epoch == 4 and not result.stopped_early
    assert all(h.val_loss is None for h in result.history)


def test_fit_cosine_schedule_decays_the_learning_rate_to_zero():
    x, y = blob_task(n=48)
    model = small_cnn()
    base = TrainSettings(max_epochs=3, batch_size=16, patience=None, lr=1e-2, schedule="constant")
    cosine = TrainSettings(**{**base.__dict__, "schedule": "cosine"})
    steps = []
    original = torch.optim.AdamW.step

    def record(self, *args, **kwargs):
        steps.append(self.param_groups[0]["lr"])
        return original(self, *args, **kwargs)

    torch.optim.AdamW.step = record
    try:
        fit(model, x, y, device="cpu", settings=cosine, num_threads=1)
        n_cosine = len(steps)
        fit(small_cnn(), x, y, device="cpu", settings=base, num_threads=1)
    finally:
        torch.optim.AdamW.step = original
    per_epoch = n_cosine // 3
    cosine_lr, constant_lr = steps[:n_cosine], steps[n_cosine:]
    assert cosine_lr[0] == pytest.approx(1e-2) and set(constant_lr) == {1e-2}
    # one value per epoch, decreasing along half a cosine: 1, 0.75, 0.25 of lr
    assert cosine_lr[::per_epoch] == pytest.approx([1e-2, 7.5e-3, 2.5e-3])
    with pytest.raises(ValueError, match="schedule"):
        TrainSettings(schedule="step")  # type: ignore[arg-type]


def test_fit_is_repeatable_bit_for_bit_and_seed_matters():
    x, y = blob_task(n=64)
    settings = TrainSettings(max_epochs=3, batch_size=16, patience=3)

    def run(seed: int) -> dict[str, torch.Tensor]:
        model = small_cnn(seed=0)
        fit(model, x, y, seed=seed, device="cpu", settings=settings, num_threads=1)
        return model.state_dict()

    a, b, c = run(7), run(7), run(8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_fit_restores_thread_count_and_handles_batch_of_one():
    x, y = blob_task(n=60)  # find a size whose training part leaves a last batch of one
    before = torch.get_num_threads()
    settings = TrainSettings(max_epochs=2, batch_size=16, patience=2)
    for n in range(20, 60):
        train, _, _ = inner_split(y[:n], val_fraction=settings.val_fraction, seed=derive_seed(0, 0))
        if len(train) % 16 == 1:
            break
    assert len(train) % 16 == 1
    model = small_cnn(batchnorm=True)
    fit(model, x[:n], y[:n], device="cpu", settings=settings, num_threads=1)
    assert torch.get_num_threads() == before


def test_fit_rejects_bad_inputs():
    x, y = blob_task(n=20)
    model = small_cnn()
    with pytest.raises(ValueError, match="square"):
        fit(model, x[:, :, :, :10], y, device="cpu")
    with pytest.raises(ValueError, match="0 or 1"):
        fit(model, x, y * 2, device="cpu")
    with pytest.raises(ValueError, match="both classes"):
        fit(model, x, np.zeros(20, int), device="cpu")
    with pytest.raises(ValueError, match="labels must be"):
        fit(model, x, y[:5], device="cpu")
    x_nan = x.copy()
    x_nan[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit(model, x_nan, y, device="cpu")
    with pytest.raises(ValueError):
        TrainSettings(val_fraction=0.7)
    with pytest.raises(ValueError):
        TrainSettings(monitor="accuracy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="patience"):
        TrainSettings(patience=0)


def test_predict_proba_is_deterministic_in_eval_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(8, 1), nn.Flatten(0))
    x = np.random.default_rng(0).normal(size=(10, 2, 2, 2)).astype("float32")
    a, b = predict_proba(model, x, "cpu", batch_size=3), predict_proba(model, x, "cpu")
    assert a.shape == (10,) and a.dtype == np.float64
    assert np.array_equal(a, b)
    assert ((a > 0) & (a < 1)).all()


def test_torch_patch_classifier_is_an_estimator():
    x, y = blob_task(n=80)
    est = TorchPatchClassifier(small_cnn(), settings=FAST, device="cpu", num_threads=1)
    assert est.fit(x, y, seed=0) is est
    assert est.fit_result_ is not None and est.fit_result_.epochs_run >= 1
    p = est.predict_proba(x)
    assert p.shape == (80,) and roc_auc_score(y, p) > 0.8


def test_standardized_scales_with_training_statistics_only():
    x, y = blob_task(n=80)
    x = x * 3.0 + 10.0  # physical units
    x[:5, :, :2, :2] = np.nan  # nodata
    train, test = np.arange(60), np.arange(60, 80)
    x_test = x[test].copy()
    x_test[:, 1] += 100.0  # test patches must not move the statistics
    inner = TorchPatchClassifier(small_cnn(), settings=FAST, device="cpu", num_threads=1)
    model = Standardized(inner).fit(x[train], y[train], seed=0)
    valid = x[train].transpose(1, 0, 2, 3).reshape(2, -1)
    np.testing.assert_allclose(model.stats_.mean, np.nanmean(valid, axis=1), rtol=1e-5)
    np.testing.assert_allclose(model.stats_.std, np.nanstd(valid, axis=1), rtol=1e-4)
    z = model.transform(x[train])
    assert np.isfinite(z).all() and (z[:5, :, :2, :2] == 0).all()  # nodata -> band mean
    assert abs(float(z[5:].mean())) < 0.05
    p = model.predict_proba(x_test)
    assert p.shape == (20,) and np.isfinite(p).all()
    assert model.fit_result_ is inner.fit_result_
    with pytest.raises(NotFittedError, match="not fitted"):
        Standardized(inner).predict_proba(x_test)


def test_test_time_augmentation_averages_the_eight_rotations_and_flips():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 1), nn.Flatten(0))  # sees orientation
    x = np.random.default_rng(0).normal(size=(5, 1, 4, 4)).astype("float32")
    plain = TorchPatchClassifier(net, settings=TrainSettings(), device="cpu")
    tta = TorchPatchClassifier(net, settings=TrainSettings(tta=True), device="cpu")
    with torch.no_grad():
        views = [net(dihedral(torch.from_numpy(x), k)) for k in range(8)]
    expected = torch.stack(views).mean(0).double().numpy()
    np.testing.assert_allclose(tta.decision_function(x), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(plain.decision_function(x), expected)
    np.testing.assert_allclose(tta.predict_proba(x), 1 / (1 + np.exp(-expected)), rtol=1e-5)


def _lazy(x: np.ndarray):
    """``x`` (physical, NaN for nodata) as a lazy PatchArray over an in-memory store."""
    from soilsource.data.patches import PatchStore, _Part

    n = len(x)
    zeros = np.zeros(n, int)
    part = _Part(None, zeros, zeros, np.nan_to_num(x, nan=0.0), np.isfinite(x).all(axis=1))
    return PatchStore([part], ("a", "b"), x.shape[-1], np.zeros(n)).physical()


@pytest.mark.parametrize("target", ["label", "value"])
def test_lazy_patches_train_and_predict_exactly_as_arrays_in_batches(target, monkeypatch):
    from soilsource.data.patches import PatchStore

    x, y = blob_task(n=160)
    x = x * 3.0 + 10.0
    x[:5, :, :2, :2] = np.nan
    labels = y if target == "label" else np.exp(y + np.random.default_rng(0).normal(size=160))

    def trained(patches):
        torch.manual_seed(0)
        inner = TorchPatchClassifier(small_cnn(), settings=FAST, device="cpu", num_threads=1,
                                     target=target)  # fmt: skip
        model = Standardized(inner).fit(patches[np.arange(140)], labels[:140], seed=0)
        limit = np.full(20, 1.5) if target == "value" else None
        return model, model.predict_proba(patches[np.arange(140, 160)], limit)

    dense_model, dense_p = trained(x)
    sizes = []
    read = PatchStore.read
    monkeypatch.setattr(PatchStore, "read", lambda s, i=None: sizes.append(len(s)) or read(s, i))
    for in_memory_mb in (0, training.IN_MEMORY_MB):  # streamed; read once and held
        sizes.clear()
        monkeypatch.setattr(training, "IN_MEMORY_MB", in_memory_mb)
        lazy_model, lazy_p = trained(_lazy(x))
        np.testing.assert_array_equal(dense_p, lazy_p)
        for key, value in dense_model.inner.module.state_dict().items():
            assert torch.equal(value, lazy_model.inner.module.state_dict()[key]), key
        if in_memory_mb == 0:
            assert max(sizes) <= 64  # batches, never the 140 training patches at once
        else:  # band statistics in chunks, then the scaled copy in one read, not per epoch
            assert sizes.count(140) == 1 and sum(sizes) == 2 * 140 + 20
