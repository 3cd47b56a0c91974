"""Self-supervised pretraining of the trunk: unlabelled pairs, the triplet loss, the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from soilsource.data.patches import BandStats
from soilsource.inputs.imagery import describe_raster
from soilsource.models import SILICNet
from soilsource.models.pretrain import (
    PretrainSettings,
    cache_dir,
    fingerprint,
    load_trunk,
    pretrain_trunk,
    pretrained_trunk,
    trunk_state,
    unlabelled_pairs,
)
from tinyinputs import write_raster

PATCH = 16
FAST = PretrainSettings(steps=30, batch=8, anchors=48)


def patchwork(seed: int = 0, size: int = 96) -> np.ndarray:
    """3 bands of fields 16 px wide, each with its own spectrum, plus noise."""
    rng = np.random.default_rng(seed)
    fields = rng.normal(0, 1, (3, size // 16, size // 16)).repeat(16, 1).repeat(16, 2)
    return (1000 + 300 * fields + 30 * rng.normal(size=(3, size, size))).astype(np.float32)


@pytest.fixture
def raster(tmp_path):
    return describe_raster(write_raster(tmp_path / "img.tif", patchwork()))


def test_pairs_lie_inside_the_raster_and_near_each_other(raster):
    a, n = unlabelled_pairs([raster], PATCH, 40, neighbour_px=5, seed=1)
    assert len(a) == len(n) == 40
    assert a.data.shape == (40, 3, PATCH, PATCH) and a.valid.all() and n.valid.all()
    for p in (a, n):
        assert (p.row_off >= 0).all() and (p.row_off <= raster.height - PATCH).all()
        assert (p.col_off >= 0).all() and (p.col_off <= raster.width - PATCH).all()
    assert np.abs(a.row_off - n.row_off).max() <= 5 and np.abs(a.col_off - n.col_off).max() <= 5
    again, _ = unlabelled_pairs([raster], PATCH, 40, neighbour_px=5, seed=1)
    assert np.array_equal(again.row_off, a.row_off)  # seeded


def test_pairs_avoid_nodata(tmp_path):
    data = patchwork()
    data[:, :, :60] = -9999  # only the right 36 columns hold data
    raster = describe_raster(write_raster(tmp_path / "nd.tif", data, nodata=-9999))
    a, n = unlabelled_pairs([raster], PATCH, 30, neighbour_px=4, seed=0)
    assert len(a) > 0
    assert a.valid.mean(axis=(1, 2)).min() >= 0.9 and n.valid.mean(axis=(1, 2)).min() >= 0.9
    with pytest.raises(ValueError, match="at least 200 px"):
        unlabelled_pairs([raster], 200, 5, 4, 0)


def test_pretraining_lowers_the_triplet_loss_and_changes_only_the_trunk(raster):
    torch.manual_seed(0)
    model = SILICNet(3, patch_px=PATCH, width=8, hidden=8)
    head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.")}
    before = trunk_state(model)
    a, n = unlabelled_pairs([raster], PATCH, 64, neighbour_px=4, seed=0)
    stats = BandStats.fit(a)
    settings = PretrainSettings(steps=60, batch=16, anchors=64)
    losses = pretrain_trunk(model, stats.transform(a), stats.transform(n), settings, device="cpu")
    assert len(losses) == 60
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])  # measured: 0.30 -> 0.19
    after = trunk_state(model)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    for k, v in head.items():
        assert torch.equal(model.state_dict()[k], v)
    assert not model.training


def test_members_learn_as_separate_networks(raster):
    torch.manual_seed(0)
    model = SILICNet(3, patch_px=PATCH, width=4, hidden=4, members=2)
    a, n = unlabelled_pairs([raster], PATCH, 32, neighbour_px=4, seed=0)
    x = BandStats.fit(a).transform(a)
    losses = pretrain_trunk(model, x, BandStats.fit(a).transform(n), FAST, device="cpu")
    assert np.isfinite(losses).all()
    w = model.blocks[0][1].weight  # grouped pointwise: (8, 4, 1, 1), one group per member
    assert w.shape == (8, 4, 1, 1)


def test_a_pretrained_trunk_is_cached_by_the_imagery(raster, tmp_path, monkeypatch):
    def build():
        torch.manual_seed(0)
        return SILICNet(3, patch_px=PATCH, width=8, hidden=8)

    cache = tmp_path / "cache"
    state = pretrained_trunk([raster], build, FAST, seed=0, device="cpu", cache=cache)
    files = list(cache.glob("trunk-*.pt"))
    assert len(files) == 1

    def refuse(*args, **kwargs):
        raise AssertionError("pretrained again although the cache holds the trunk")

    monkeypatch.setattr("soilsource.models.pretrain.pretrain_trunk", refuse)
    again = pretrained_trunk([raster], build, FAST, seed=0, device="cpu", cache=cache)
    assert all(torch.equal(state[k], again[k]) for k in state)
    # Another seed, other settings or other imagery: another entry.
    key = fingerprint([raster], build().config, FAST, 0)
    assert key != fingerprint([raster], build().config, FAST, 1)
    assert key != fingerprint([raster], build().config, PretrainSettings(steps=31), 0)
    other = describe_raster(write_raster(tmp_path / "other.tif", patchwork(seed=1)))
    assert key != fingerprint([other], build().config, FAST, 0)
    # A damaged entry is pretrained again, not trusted.
    monkeypatch.undo()
    files[0].write_bytes(b"not a torch file")
    fixed = pretrained_trunk([raster], build, FAST, seed=0, device="cpu", cache=cache)
    assert all(torch.equal(state[k], fixed[k]) for k in state)  # seeded: the same trunk


def test_load_trunk_copies_the_trunk_and_refuses_another_architecture():
    torch.manual_seed(0)
    source = SILICNet(3, patch_px=PATCH, width=8, hidden=8)
    target = SILICNet(3, patch_px=PATCH, width=8, hidden=8)
    head = target.head[0].weight.clone()
    load_trunk(target, trunk_state(source))
    assert torch.equal(target.stem[0].weight, source.stem[0].weight)
    assert torch.equal(target.head[0].weight, head)
    with pytest.raises(ValueError, match="does not fit"):
        load_trunk(SILICNet(3, patch_px=PATCH, width=4, hidden=8), trunk_state(source))


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SOILSOURCE_CACHE", str(tmp_path / "x"))
    assert cache_dir() == tmp_path / "x"
    monkeypatch.delenv("SOILSOURCE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "soilsource"


def test_bad_settings_are_refused():
    with pytest.raises(ValueError):
        PretrainSettings(steps=0)
    with pytest.raises(ValueError):
        PretrainSettings(neighbour_share=0.0)


def test_pretraining_is_seeded_and_leaves_the_callers_random_state_alone(raster, tmp_path):
    def build():
        return SILICNet(3, patch_px=PATCH, width=8, hidden=8)  # unseeded: pretrained_trunk seeds

    torch.manual_seed(123)
    first = pretrained_trunk([raster], build, FAST, seed=0, device="cpu", cache=tmp_path / "a")
    after = torch.rand(3)
    torch.manual_seed(456)
    second = pretrained_trunk([raster], build, FAST, seed=0, device="cpu", cache=tmp_path / "b")
    assert all(torch.equal(first[k], second[k]) for k in first)  # no cache shared: recomputed
    torch.manual_seed(123)
    torch.rand(0)
    assert torch.equal(torch.rand(3), after)  # pretraining drew nothing from the global RNG
