"""Area of applicability (Meyer & Pebesma 2021): DI, the CV threshold, the raster."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio

from soilsource.data.patches import BandStats, read_windows
from soilsource.inputs.imagery import describe_raster
from soilsource.mapping.applicability import (
    TAG,
    Applicability,
    pooled_features,
    threshold,
    write_applicability,
)
from soilsource.models.silicnet import random_silicnet
from tinyinputs import write_raster


def test_training_di_is_taken_outside_each_samples_own_fold():
    # Two tight pairs; each pair split over the folds, or kept in one fold.
    train = np.array([[0.0, 0.0], [0.0, 0.1], [5.0, 5.0], [5.0, 5.1]])
    apart = Applicability(train, np.array([0, 1, 0, 1]))
    together = Applicability(train, np.array([0, 0, 1, 1]))
    assert apart.training_di.max() < 0.05  # each sample's twin is in the other fold
    assert together.training_di.min() > 0.5  # the nearest sample outside the fold is far


def test_threshold_is_the_largest_training_di_that_is_not_an_outlier():
    di = np.array([0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 3.0])
    q25, q75 = np.percentile(di, [25, 75])
    assert q75 + 1.5 * (q75 - q25) < 3.0
    assert threshold(di) == 0.4
    assert threshold(np.array([0.1, 0.2, 0.3])) == 0.3  # no outlier: the maximum


def test_new_locations_far_in_feature_space_are_outside():
    rng = np.random.default_rng(1)
    train = rng.normal(size=(80, 5))
    aoa = Applicability(train, np.arange(80) % 4)
    near = aoa.di(train + rng.normal(scale=0.01, size=train.shape))
    far = aoa.di(train + 20.0)
    assert (near <= aoa.threshold).all()
    assert (far > aoa.threshold).all()
    assert aoa.d_bar > 0


def test_the_raster_holds_the_di_and_the_threshold(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, size=(3, 48, 48)).astype("float32")
    image[:, :, 32:] += 400  # the east third looks like nothing the samples saw
    path = write_raster(tmp_path / "img.tif", image)
    raster = describe_raster(path)
    model = random_silicnet(3, 16, seed=0).eval()
    rows = np.array([4, 8, 12, 16, 20, 24, 28, 4, 16, 28])
    cols = np.array([4, 8, 12, 4, 8, 12, 4, 12, 12, 8])
    patches = read_windows(raster, rows - 8, cols - 8, 16, threads=1)
    stats = BandStats.fit(patches)
    aoa = Applicability(pooled_features(model, stats.transform(patches)), np.arange(10) % 2)
    out = write_applicability(tmp_path / "aoa.tif", model, stats, raster, aoa, stride_px=4)
    with rasterio.open(out) as src:
        di = src.read(1)
        limit = float(src.tags()[TAG])
        assert (src.width, src.height) == (48, 48) and src.crs == raster.crs
    assert limit == pytest.approx(aoa.threshold)
    west, east = di[8:24, 6:16], di[8:24, 40:44]
    assert limit < np.nanmin(east)  # unlike any training patch: outside
    assert np.nanmedian(west) < np.nanmin(east) / 3  # where the samples are: far more alike


def test_a_kept_training_set_loads_to_the_same_threshold_and_di(tmp_path):
    """What a run keeps for ``predict`` (npz, no pickle) rebuilds the very same area of
    applicability: threshold, ``d_bar`` and the DI of new points, bit for bit."""
    rng = np.random.default_rng(5)
    aoa = Applicability(rng.normal(size=(50, 6)).astype(np.float32), np.arange(50) % 4)
    path = aoa.save(tmp_path / "m.aoa-r1.npz")
    again = Applicability.load(path)
    new = rng.normal(size=(20, 6)) * 3
    assert again.threshold == aoa.threshold and again.d_bar == aoa.d_bar
    np.testing.assert_array_equal(again.di(new), aoa.di(new))
    with np.load(path, allow_pickle=False) as saved:  # plain arrays only
        assert sorted(saved.files) == ["features", "folds"]
