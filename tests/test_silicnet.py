"""SI-LICNet: shapes and sizes, locality of the trunk (no padding), ring pooling, learning."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from soilsource.models import RingPooling, SILICNet
from soilsource.models.silicnet import BlurStem, ring_bounds


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one thread avoids OpenMP contention on a busy shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _dihedral(t: torch.Tensor) -> list[torch.Tensor]:
    turns = [torch.rot90(t, k, dims=(-2, -1)) for k in range(4)]
    return turns + [torch.flip(r, dims=(-1,)) for r in turns]


def test_defaults_are_lightweight_and_cover_the_patch():
    model = SILICNet(6)
    assert model.patch_px == 128
    assert sum(p.numel() for p in model.parameters()) <= 200_000
    assert (model.n_blocks, model.grid_px, model.receptive_field_px) == (3, 57, 16)
    # Trunk grid plus receptive field span the patch: nothing of it is left out.
    assert 2 * (model.grid_px - 1) + model.receptive_field_px == 128


@pytest.mark.parametrize(("patch_px", "blocks"), [(128, 3), (32, 3), (24, 3), (16, 1), (10, 0)])
def test_forward_gives_one_logit_per_patch(patch_px, blocks):
    model = SILICNet(3, patch_px).eval()
    assert model.n_blocks == blocks
    out = model(torch.randn(5, 3, patch_px, patch_px))
    assert out.shape == (5,)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()


def test_trunk_has_no_padding_and_no_position_mixing_before_the_pooling():
    model = SILICNet(2, 40)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            assert module.padding == (0, 0)
    assert model.n_blocks == 3


def test_trunk_is_local_and_translation_equivariant():
    """Features of a shifted crop equal the shifted features: border position never matters."""
    model = SILICNet(3, 32).eval()
    x = torch.randn(2, 3, 40, 44)
    full = model.features(x)
    assert full.shape == (2, model.width, 19 - 6, 21 - 6)  # (H - 4) // 2 + 1 stem cells
    crop = model.features(x[:, :, 6:, 10:])  # shift by 3 and 5 stem cells
    torch.testing.assert_close(crop, full[:, :, 3:, 5:], rtol=1e-5, atol=1e-5)
    # A cell sees exactly its receptive field: change a pixel just outside, nothing moves.
    rf = model.receptive_field_px
    y = x.clone()
    y[:, :, rf, :] += 10.0  # row rf is first seen by cell 1, not cell 0
    changed = model.features(y)
    torch.testing.assert_close(changed[:, :, 0], full[:, :, 0])
    assert not torch.allclose(changed[:, :, 1], full[:, :, 1])


def test_blur_stem_is_a_blur_then_a_strided_two_by_two_convolution():
    stem = BlurStem(3, 5, bias=True)
    x = torch.randn(2, 3, 20, 21)
    taps = torch.tensor([1.0, 2.0, 1.0])
    blur = (taps[:, None] * taps[None, :] / 16).expand(3, 1, 3, 3)
    expected = F.conv2d(F.conv2d(x, blur, groups=3), stem.weight, stem.bias, stride=2)
    torch.testing.assert_close(stem(x), expected)
    torch.testing.assert_close(F.conv2d(x, stem.kernel(), stem.bias, stride=2), expected)
    blur, conv = stem.parts()
    torch.testing.assert_close(conv(blur(x)), expected)
    assert stem.weight.shape == (5, 3, 2, 2)  # parameters of the 2 x 2 convolution only


def test_antialiased_stem_cannot_see_the_pattern_a_stride_would_alias():
    """A pixel checkerboard (the Nyquist frequency) vanishes in the blur, not in a plain stem."""
    x = torch.randn(1, 2, 24, 24)
    checker = (-1.0) ** (torch.arange(24)[:, None] + torch.arange(24)[None, :])
    for antialias in (True, False):
        model = SILICNet(2, 24, antialias=antialias).eval()
        moved = (model.features(x + 3 * checker) - model.features(x)).abs().max()
        assert (moved < 1e-4) == antialias


@pytest.mark.parametrize(("antialias", "batchnorm"), [(True, True), (True, False), (False, True)])
def test_inference_stages_match_the_trunk(antialias, batchnorm):
    model = SILICNet(4, 24, antialias=antialias, batchnorm=batchnorm)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    with pytest.raises(RuntimeError, match="eval"):
        model.inference_stages()
    for conv in (m for m in model.modules() if isinstance(m, nn.Conv2d) and m.bias is not None):
        conv.bias.data.uniform_(-1, 1)
    model.eval()
    x = torch.randn(3, 4, 30, 26)
    act = x.contiguous(memory_format=torch.channels_last)
    for stage in model.inference_stages():
        act = stage(act)
    torch.testing.assert_close(act, model.features(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("antialias", "batchnorm"), [(True, True), (False, False)])
def test_config_rebuilds_the_same_model(antialias, batchnorm):
    model = SILICNet(5, 48, width=16, hidden=8, n_rings=4, antialias=antialias, batchnorm=batchnorm)
    model.eval()
    twin = SILICNet(**model.config)
    twin.load_state_dict(model.state_dict())
    twin.eval()
    x = torch.randn(2, 5, 48, 48)
    torch.testing.assert_close(twin(x), model(x))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"in_channels": 0}, "in_channels"),
        ({"in_channels": 3, "kernel_size": 4}, "odd"),
        ({"in_channels": 3, "patch_px": 1}, "patch_px"),
        ({"in_channels": 3, "patch_px": 12, "n_blocks": 3}, "too small"),
        ({"in_channels": 3, "patch_px": 32, "n_blocks": -1}, "too small"),
    ],
)
def test_bad_construction_is_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SILICNet(**kwargs)


def test_wrong_inputs_are_refused():
    model = SILICNet(3, 24)
    with pytest.raises(ValueError, match="built for 24"):
        model(torch.randn(1, 3, 26, 26))
    with pytest.raises(ValueError, match="expected"):
        model(torch.randn(1, 4, 24, 24))
    with pytest.raises(ValueError, match="receptive field"):
        model.features(torch.randn(1, 3, 10, 40))


def test_ring_bounds_are_increasing_and_geometric():
    for levels in range(1, 70):
        for n in range(1, 9):
            b = ring_bounds(levels, n)
            assert b[0] == 0 and b[-1] == levels
            assert len(b) == min(n, levels) + 1
            assert all(lo < hi for lo, hi in itertools.pairwise(b))
    widths = [hi - lo for lo, hi in itertools.pairwise(ring_bounds(64, 6))]
    assert widths == sorted(widths)  # wider outwards
    with pytest.raises(ValueError):
        ring_bounds(0, 3)


@pytest.mark.parametrize("grid", [1, 2, 7, 10, 58])
def test_rings_partition_the_grid_and_are_dihedral_invariant(grid):
    pool = RingPooling(grid, 6)
    basis = pool.basis
    torch.testing.assert_close(basis.sum(dim=(1, 2)), torch.ones(pool.n_rings))
    members = (basis > 0).sum(dim=0)
    assert torch.equal(members, torch.ones_like(members))  # each cell in exactly one ring
    for image in _dihedral(basis):
        torch.testing.assert_close(image, basis)
    # The innermost ring is the central cell (odd grid) or the central 2 x 2 (even grid).
    assert int((basis[0] > 0).sum()) == (1 if grid % 2 else 4)


@pytest.mark.parametrize("grid", [1, 2, 7, 10, 57])
def test_quadrants_split_each_ring_into_four_mirror_images(grid):
    rings, quads = RingPooling(grid, 6).basis, RingPooling(grid, 6, n_sectors=4).basis
    r = rings.shape[0]
    assert quads.shape == (4 * r, grid, grid)
    torch.testing.assert_close(quads.sum(dim=(1, 2)), torch.ones(4 * r))  # each a mean
    per_ring = quads.view(r, 4, grid, grid)
    # A ring's quadrants together are the ring (each a quarter of its mass).
    torch.testing.assert_close(per_ring.mean(dim=1), rings)
    nw, ne, sw, se = per_ring.unbind(1)
    torch.testing.assert_close(ne, nw.flip(-1))  # east is west mirrored
    torch.testing.assert_close(sw, nw.flip(-2))  # south is north mirrored
    torch.testing.assert_close(se, nw.flip(-2, -1))
    if grid > 2:  # the north-west quadrant lies north and west of the centre
        rows, cols = torch.nonzero(nw[-1] > 0).T.float()
        assert rows.mean() < (grid - 1) / 2 and cols.mean() < (grid - 1) / 2


def test_quadrants_tell_directions_apart_where_rings_cannot():
    f = torch.zeros(1, 1, 9, 9)
    f[0, 0, 0, 4] = 1.0  # a feature due north of the centre
    g = torch.rot90(f, 2, dims=(-2, -1))  # the same feature due south
    rings, quads = RingPooling(9, 4), RingPooling(9, 4, n_sectors=4)
    torch.testing.assert_close(rings(f), rings(g))
    outer = quads(f)[0, 0, -4:]  # NW, NE, SW, SE of the outer ring
    assert outer[0] == outer[1] > 0 and outer[2] == outer[3] == 0
    assert not torch.equal(quads(f), quads(g))
    with pytest.raises(ValueError, match="n_sectors"):
        RingPooling(9, 4, n_sectors=2)


def test_ring_pooling_is_invariant_to_rotations_and_flips_of_the_features():
    pool = RingPooling(9, 4)
    f = torch.randn(2, 3, 9, 9)
    for image in _dihedral(f):
        torch.testing.assert_close(pool(image), pool(f))


@pytest.mark.parametrize(
    ("grid", "n_rings", "n_sectors"),
    [(1, 3, 1), (4, 2, 1), (7, 6, 1), (12, 5, 1), (1, 3, 4), (7, 6, 4), (12, 5, 4)],
)
def test_sliding_ring_pooling_equals_pooling_each_window(grid, n_rings, n_sectors):
    pool = RingPooling(grid, n_rings, n_sectors)
    f = torch.randn(2, 3, grid + 6, grid + 4) * 10 + 50  # large offset: summed tables in float64
    dense = pool.sliding(f)
    assert dense.shape == (2, 3, pool.n_elements, 7, 5)
    for i in range(7):
        for j in range(5):
            torch.testing.assert_close(
                dense[..., i, j], pool(f[:, :, i : i + grid, j : j + grid]), rtol=1e-6, atol=1e-5
            )
    with pytest.raises(ValueError, match="no"):
        pool.sliding(torch.randn(1, 1, grid - 1 if grid > 1 else 0, grid))
    with pytest.raises(ValueError, match="expects"):
        pool(torch.randn(1, 1, grid + 1, grid + 1))


def test_learns_how_far_from_the_sample_a_source_lies():
    """A bright parcel near the centre means contaminated, the same parcel far away clean."""
    torch.manual_seed(0)
    n, size = 64, 20
    x = torch.randn(n, 2, size, size) * 0.3
    y = torch.arange(n) % 2
    for i in range(n):
        if y[i]:
            r, c = torch.randint(7, 10, (2,)).tolist()  # parcel at the centre
        else:
            r, c = (
                torch.randint(0, 3, (2,)) + torch.tensor([0, 13]) * torch.randint(0, 2, (2,))
            ).tolist()  # parcel in a corner region
        x[i, 0, r : r + 4, c : c + 4] += 2.0
    model = SILICNet(2, size, width=8, hidden=8, dropout=0.0, n_blocks=1)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.03)
    loss_fn = nn.BCEWithLogitsLoss()
    for _ in range(40):
        optimiser.zero_grad()
        loss = loss_fn(model(x), y.float())
        loss.backward()
        optimiser.step()
    model.eval()
    accuracy = ((model(x) > 0).long() == y).float().mean().item()
    assert accuracy >= 0.95


def test_members_are_independent_networks_whose_mean_is_the_output():
    torch.manual_seed(0)
    model = SILICNet(3, patch_px=24, members=3, width=8, hidden=4).eval()
    x = torch.randn(5, 3, 24, 24)
    with torch.no_grad():
        members = model.member_outputs(x)
        assert members.shape == (5, 3)
        assert torch.allclose(members.mean(1), model(x), atol=1e-6)
    # member 0's output depends on member 0's parameters only: its gradient is zero
    # for every parameter entry that belongs to another member
    model.train()
    model.member_outputs(x)[:, 0].sum().backward()
    head = model.head[0].parametrizations.weight.original.grad
    assert head[4:].abs().sum() == 0 and head[:4, 8 * model.n_rings :].abs().sum() == 0
    pointwise = model.blocks[0][1].weight.grad  # grouped: (24, 8, 1, 1)
    assert pointwise[8:].abs().sum() == 0 and pointwise[:8].abs().sum() > 0
    assert model.head[3].weight.grad[0, 4:].abs().sum() == 0


def test_members_round_trip_through_config_and_state_dict():
    torch.manual_seed(1)
    model = SILICNet(2, patch_px=16, members=2).eval()
    again = SILICNet(**model.config)
    again.load_state_dict(model.state_dict())
    x = torch.randn(2, 2, 16, 16)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), model(x))
    assert not any("mask" in key for key in model.state_dict())  # derived, not stored
