"""Occlusion sensitivity: equal to Captum's Occlusion (the oracle), incremental and full."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import Occlusion
from torch import nn

from soilsource.explain import occlusion_sensitivity
from soilsource.explain.occlusion import window_starts
from soilsource.models import SILICNet
from soilsource.models.silicnet import random_silicnet

TOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one thread avoids OpenMP contention on a busy shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sensitive_model(
    channels: int, patch_px: int, seed: int = 0, x: torch.Tensor | None = None
) -> SILICNet:
    """A random SI-LICNet whose probability moves by several percent under occlusion.

    With ``x``, the output bias centres the logits of ``x`` on 0, away from saturation.
    """
    torch.manual_seed(seed)
    model = SILICNet(channels, patch_px)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
        model.head[0].weight.mul_(10.0)
        model.head[-1].weight.mul_(30.0)
        model.eval()
        if x is not None:
            model.head[-1].bias.sub_(model(x).mean())
    return model


def captum(model: nn.Module, x: torch.Tensor, window: int, stride: int, baseline=0.0, squash=True):
    c = x.shape[1]
    forward = (lambda t: torch.sigmoid(model(t))) if squash else model
    occlusion = Occlusion(lambda t: forward(t).reshape(-1))
    return occlusion.attribute(
        x,
        sliding_window_shapes=(c, window, window),
        strides=(c, stride, stride),
        baselines=baseline,
        perturbations_per_eval=64,
    )[:, 0]


@pytest.mark.parametrize(
    ("channels", "patch_px", "window", "stride", "n"),
    [
        (3, 24, 8, 4, 2),  # divisible
        (2, 27, 5, 3, 2),  # odd patch, (27 - 5) % 3 != 0: cut last window
        (4, 32, 7, 3, 1),  # odd window, odd stride: windows straddle stem cells
        (3, 26, 9, 2, 1),
        (1, 30, 6, 6, 3),  # stride == window
        (3, 24, 24, 5, 1),  # one window covering the patch
        (2, 20, 1, 1, 1),  # single pixels
        (5, 40, 16, 4, 2),  # the default ratio, smaller
    ],
)
def test_incremental_equals_captum(channels, patch_px, window, stride, n):
    x = torch.randn(n, channels, patch_px, patch_px, generator=torch.Generator().manual_seed(1))
    model = sensitive_model(channels, patch_px, seed=patch_px, x=x)
    expected = captum(model, x, window, stride)
    assert expected.abs().max() > 1e-3  # the test can tell a wrong map from a right one
    got = occlusion_sensitivity(model, x, window, stride, batch_windows=7)
    assert got.shape == (n, patch_px, patch_px)
    assert got.dtype == torch.float32
    assert (got - expected).abs().max() < TOL


def test_default_batches_sized_in_bytes_equal_one_batch(monkeypatch):
    # The default splits the windows by the bytes of their crops (whole rows of windows);
    # a budget too small for one window still takes a row, and the map is the same.
    from soilsource.explain import occlusion

    x = torch.randn(2, 3, 40, 40, generator=torch.Generator().manual_seed(2))
    model = sensitive_model(3, 40, seed=4, x=x)
    one_batch = occlusion_sensitivity(model, x, 8, 4, batch_windows=10**6)
    monkeypatch.setattr(occlusion, "_BATCH_BYTES", 1)
    row_by_row = occlusion_sensitivity(model, x, 8, 4)
    assert one_batch.abs().max() > 1e-3
    assert (row_by_row - one_batch).abs().max() < 1e-6


@pytest.mark.parametrize("kind", ["number", "per band", "per pixel"])
def test_baselines_number_per_band_or_per_pixel(kind):
    x = torch.randn(2, 3, 25, 25)
    model = sensitive_model(3, 25, seed=3, x=x)
    baseline = {
        "number": 0.7,
        "per band": torch.tensor([0.5, -1.0, 2.0]).view(1, 3, 1, 1),
        "per pixel": torch.linspace(-1, 1, 25 * 25).view(25, 25),
    }[kind]
    expected = captum(model, x, 6, 4, baseline=baseline)
    got = occlusion_sensitivity(model, x, 6, 4, baseline=baseline)
    assert (got - expected).abs().max() < TOL


@pytest.mark.parametrize(("antialias", "batchnorm"), [(True, False), (False, True)])
def test_incremental_equals_captum_for_other_stems(antialias, batchnorm):
    x = torch.randn(2, 3, 26, 26)
    torch.manual_seed(4)
    model = SILICNet(3, 26, antialias=antialias, batchnorm=batchnorm).eval()
    with torch.no_grad():
        model.head[0].weight.mul_(10.0)
        model.head[-1].weight.mul_(30.0)
        model.head[-1].bias.sub_(model(x).mean())
    expected = captum(model, x, 7, 3)
    assert expected.abs().max() > 1e-3
    assert (occlusion_sensitivity(model, x, 7, 3) - expected).abs().max() < TOL


def test_incremental_equals_captum_for_an_ensemble_in_one_module():
    """members > 1: grouped pointwise convolutions and a block-diagonal head stay exact."""
    x = torch.randn(2, 3, 26, 26)
    model = random_silicnet(3, 26, seed=6, centre_on=x, members=3)
    expected = captum(model, x, 7, 3)
    assert expected.abs().max() > 1e-3
    assert (occlusion_sensitivity(model, x, 7, 3) - expected).abs().max() < TOL


@pytest.mark.parametrize("patch_px", [26, 28])  # odd and even trunk grids
def test_incremental_equals_captum_with_quadrant_sectors(patch_px):
    """Quadrants are one more fixed linear pooling: occlusion stays exact."""
    x = torch.randn(2, 3, patch_px, patch_px)
    model = random_silicnet(3, patch_px, seed=7, centre_on=x, n_sectors=4)
    expected = captum(model, x, 7, 3)
    assert expected.abs().max() > 1e-3
    assert (occlusion_sensitivity(model, x, 7, 3) - expected).abs().max() < TOL


@pytest.mark.parametrize("method", ["incremental", "full"])
def test_raw_output_equals_captum_on_the_model_itself(method):
    """output="raw": drops of the model's output (a logit, or a standardised log value)."""
    x = torch.randn(2, 3, 26, 26, generator=torch.Generator().manual_seed(2))
    model = sensitive_model(3, 26, seed=8, x=x)
    expected = captum(model, x, 7, 3, baseline=0.4, squash=False)
    got = occlusion_sensitivity(model, x, 7, 3, 0.4, method=method, output="raw")
    assert expected.abs().max() > 1e-2
    # no sigmoid to flatten the float32 rounding of the head's large sums (weights x 30)
    assert (got - expected).abs().max() < 5 * TOL
    squashed = occlusion_sensitivity(model, x, 7, 3, 0.4, method=method)
    assert not torch.allclose(got, squashed)


def test_full_method_equals_captum_and_incremental():
    x = torch.randn(2, 2, 28, 28)
    model = sensitive_model(2, 28, seed=5, x=x)
    expected = captum(model, x, 6, 4)
    full = occlusion_sensitivity(model, x, 6, 4, method="full", batch_windows=5)
    assert (full - expected).abs().max() < TOL
    assert (occlusion_sensitivity(model, x, 6, 4) - full).abs().max() < TOL


def test_full_method_works_for_any_model():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(16, 1),
        nn.Flatten(0),
    ).eval()
    x = torch.randn(2, 3, 17, 17)
    got = occlusion_sensitivity(model, x, 5, 3)  # auto: full for a non-SILICNet
    assert (got - captum(model, x, 5, 3)).abs().max() < TOL
    with pytest.raises(TypeError, match="SILICNet"):
        occlusion_sensitivity(model, x, 5, 3, method="incremental")


def test_sensitivity_sits_where_the_model_looks():
    """Only the pixels a model reads can change its output: elsewhere sensitivity is zero."""
    x = torch.randn(1, 2, 27, 27)
    model = sensitive_model(2, 27, seed=7, x=x)  # odd patch: the last row and column unread
    got = occlusion_sensitivity(model, x, 1, 1)
    rounding = 1e-6  # a few float32 steps: one matrix product may round rows differently
    assert got[0, -1, :].abs().max() <= rounding
    assert got[0, :, -1].abs().max() <= rounding
    assert (got[0, :-1, :-1].abs() > 1e-6).sum() > 0.9 * 26 * 26


def test_model_mode_is_restored():
    model = sensitive_model(2, 20).train()
    x = torch.randn(1, 2, 20, 20)
    occlusion_sensitivity(model, x, 4, 2)
    assert model.training
    model.eval()
    occlusion_sensitivity(model, x, 4, 2)
    assert not model.training


@pytest.mark.parametrize(
    ("size", "window", "stride"), [(10, 4, 3), (8, 4, 4), (9, 9, 20), (17, 5, 2)]
)
def test_window_starts_match_captum(size, window, stride):
    starts = window_starts(size, window, stride)
    count = int(np.ceil((size - window) / stride)) + 1  # Captum's shift count
    assert len(starts) == count
    assert starts[0] == 0 and starts[-1] >= size - window
    assert np.all(np.diff(starts) == stride)


@pytest.mark.parametrize(
    ("window", "stride", "kwargs", "error", "match"),
    [
        (30, 4, {}, ValueError, "window_px"),
        (0, 1, {}, ValueError, "window_px"),
        (4, 5, {}, ValueError, "stride_px"),
        (4, 0, {}, ValueError, "stride_px"),
        (4, 2, {"batch_windows": 0}, ValueError, "batch_windows"),
        (4, 2, {"method": "fast"}, ValueError, "method"),
    ],
)
def test_bad_settings_are_refused(window, stride, kwargs, error, match):
    model = sensitive_model(2, 20)
    with pytest.raises(error, match=match):
        occlusion_sensitivity(model, torch.zeros(1, 2, 20, 20), window, stride, **kwargs)


def test_bad_patches_are_refused():
    model = sensitive_model(2, 20)
    x = torch.zeros(1, 2, 20, 20)
    x[0, 1, 3, 4] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        occlusion_sensitivity(model, x, 4, 2)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        occlusion_sensitivity(model, torch.zeros(2, 20, 20), 4, 2)
    with pytest.raises(ValueError, match="built for 20"):
        occlusion_sensitivity(model, torch.zeros(1, 2, 22, 22), 4, 2)


def test_held_channels_equal_captum_and_hide_nothing_of_them():
    """Context bands held (explain.occlude_context off): a window leaves channels 3-5 as
    they are. Equal to Captum with the same baseline; a model that reads only held
    channels gets an all-zero map."""
    from soilsource.explain.sensitivity import occlusion_baseline

    x = torch.randn(2, 6, 25, 25, generator=torch.Generator().manual_seed(4))
    model = sensitive_model(6, 25, seed=5, x=x)
    base = occlusion_baseline(x, 0.0, (3, 4, 5))
    assert torch.equal(base[:, 3:], x[:, 3:]) and not base[:, :3].any()
    expected = captum(model, x, 6, 4, baseline=base)
    got = occlusion_sensitivity(model, x, 6, 4, baseline=base)
    assert expected.abs().max() > 1e-3 and (got - expected).abs().max() < TOL
    assert (got - occlusion_sensitivity(model, x, 6, 4)).abs().max() > 1e-3  # it matters
    with torch.no_grad():
        model.stem[0].weight[:, :3] = 0.0  # the network no longer reads channels 0-2
    blind = occlusion_sensitivity(model, x, 6, 4, baseline=base)
    assert blind.abs().max() < TOL


def test_typical_pixels_background_is_the_weighted_mean_of_captum_occlusions():
    """explain.occlude_with typical: the map is the share-weighted mean of one exact
    occlusion per typical pixel, each equal to Captum's with that pixel as the baseline."""
    from soilsource.data.patches import BandStats, Patches
    from soilsource.explain.sensitivity import sensitivity_maps, typical_pixels

    rng = np.random.default_rng(3)
    data = rng.normal(size=(3, 4, 25, 25)).astype(np.float32)
    data[:, :, :, :12] += 2.0  # two kinds of place
    valid = np.ones((3, 25, 25), bool)
    patches = Patches(data, valid, np.zeros(3, int), np.zeros(3, int), np.arange(3), tuple("abcd"))
    stats = BandStats.fit(patches)
    x = torch.from_numpy(stats.transform(patches))
    model = sensitive_model(4, 25, seed=6, x=x)
    background = typical_pixels(x.numpy(), valid, 3)
    assert len(background) == 3 and abs(sum(w for w, _ in background) - 1.0) < 1e-9
    got = sensitivity_maps(
        model, stats, patches, 6, 4, batch=2, progress=False, background=background
    )
    expected = sum(
        w
        * captum(model, x, 6, 4, baseline=torch.tensor(v).reshape(1, -1, 1, 1).expand_as(x).clone())
        for w, v in background
    )
    assert expected.abs().max() > 1e-3
    assert np.abs(got - expected.numpy()).max() < TOL
    mean_only = sensitivity_maps(model, stats, patches, 6, 4, batch=2, progress=False)
    assert np.abs(got - mean_only).max() > 1e-3  # the background changes the answer


def test_windows_never_change_pixels_without_data():
    """A pixel without data (outside the imagery, masked water) is the band mean the network
    reads as unknown; a window filled with typical pixels leaves it so. The map equals the
    weighted Captum occlusions with per-pixel baselines that keep those pixels, and a
    window over unseen pixels only hides nothing: pixels covered by no other window get 0."""
    from soilsource.data.patches import BandStats, Patches
    from soilsource.explain.sensitivity import sensitivity_maps, typical_pixels

    rng = np.random.default_rng(7)
    data = rng.normal(size=(3, 4, 24, 24)).astype(np.float32)
    data[:, :, :, 12:] += 2.0
    valid = np.ones((3, 24, 24), bool)
    valid[:, :8, :8] = False  # an unseen corner: two windows of 4 px wide, stride 4
    data[~valid[:, None].repeat(4, 1)] = 0.0
    patches = Patches(data, valid, np.zeros(3, int), np.zeros(3, int), np.arange(3), tuple("abcd"))
    stats = BandStats.fit(patches)
    x = torch.from_numpy(stats.transform(patches))
    model = sensitive_model(4, 24, seed=8, x=x)
    background = typical_pixels(x.numpy(), valid, 3)
    got = sensitivity_maps(
        model, stats, patches, 4, 4, batch=2, progress=False, background=background
    )
    unseen = torch.from_numpy(~valid)[:, None]
    expected = sum(
        w
        * captum(
            model, x, 4, 4, baseline=torch.where(unseen, x, torch.tensor(v).reshape(1, -1, 1, 1))
        )
        for w, v in background
    )
    assert expected.abs().max() > 1e-3 and np.abs(got - expected.numpy()).max() < TOL
    assert np.abs(got[:, :8, :8]).max() < TOL  # windows wholly unseen hide nothing
    naive = sum(
        w
        * captum(model, x, 4, 4, baseline=torch.tensor(v).reshape(1, -1, 1, 1).expand_as(x).clone())
        for w, v in background
    )
    assert naive[:, :8, :8].abs().max() > 1e-3  # filling them would have made them matter
