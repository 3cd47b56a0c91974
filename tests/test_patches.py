"""Patches: centring, edges and nodata, both read paths against a brute-force oracle, statistics."""

from __future__ import annotations

import numpy as np
import pytest

from soilsource.data.patches import (
    BandStats,
    Patches,
    PatchReader,
    PatchStore,
    _Part,
    batch_rows,
    block_order,
    extract_patches,
    iter_patches,
    patch_origins,
    patch_size_px,
    sample_patches,
)
from soilsource.errors import InputError
from soilsource.inputs import describe_raster
from tinyinputs import ORIGIN, PIXEL_M, imagery_data, write_raster


def oracle(data: np.ndarray, valid: np.ndarray, row_off, col_off, size: int):
    """Patches by pixel-by-pixel copying from an in-memory array (slow, obviously right)."""
    count, height, width = data.shape
    out = np.zeros((len(row_off), count, size, size), np.float32)
    ok = np.zeros((len(row_off), size, size), bool)
    for i, (r0, c0) in enumerate(zip(row_off, col_off, strict=True)):
        for y in range(size):
            for x in range(size):
                r, c = r0 + y, c0 + x
                if 0 <= r < height and 0 <= c < width and valid[r, c]:
                    out[i, :, y, x] = data[:, r, c]
                    ok[i, y, x] = True
    return out, ok


def test_origins_centre_odd_and_even_sizes():
    rows, cols = np.array([10.3, 10.5, 10.99]), np.array([0.0, 0.0, 0.0])
    # odd: the pixel containing the point is the centre pixel
    r, _ = patch_origins(rows, cols, 3)
    assert (r + 1).tolist() == [10, 10, 10]
    # even: the grid corner nearest the point is the centre; a tie goes to the lower one
    r, _ = patch_origins(rows, cols, 4)
    assert (r + 2).tolist() == [10, 10, 11]


def test_patch_size_px():
    grid = _grid()
    assert patch_size_px(160, grid) == 16
    assert patch_size_px(3, grid) == 1
    assert patch_size_px(1284, grid) == 128


def _grid():
    from pathlib import Path

    from affine import Affine
    from pyproj import CRS

    from soilsource.inputs import RasterInfo

    return RasterInfo(
        Path("x.tif"), CRS.from_epsg(32649), Affine(10, 0, 0, 0, -10, 0), 64, 64, 1,
        "uint16", (None,), (1.0,), (0.0,), ("b",), (16, 16),
    )  # fmt: skip


def test_block_order_is_a_permutation_by_block_rows():
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(-20, 300, 100), rng.integers(-20, 300, 100)
    order = block_order(rows, cols, (64, 64))
    assert sorted(order.tolist()) == list(range(100))
    block_rows = np.floor_divide(rows[order], 64)
    assert (np.diff(block_rows) >= 0).all()


@pytest.mark.parametrize("by_blocks", [True, False])
@pytest.mark.parametrize(
    ("dtype", "nodata"), [("uint16", 0), ("float32", np.nan), ("int16", -9999), ("uint8", None)]
)
def test_both_read_paths_match_the_oracle(tmp_path, by_blocks, dtype, nodata):
    rng = np.random.default_rng(1)
    data = rng.integers(1, 200, size=(3, 70, 50)).astype(dtype)
    if nodata is not None:
        data[:, 10:14, 20:30] = nodata
        data[1, 40:44, 5:9] = nodata  # one band only: the pixel is invalid
    scale, offset = (0.5, 2.0) if dtype == "int16" else (1.0, 0.0)
    path = write_raster(
        tmp_path / "r.tif",
        data,
        nodata=nodata,
        block=16,
        scales=(scale,) * 3,
        offsets=(offset,) * 3,
    )
    valid = np.ones(data.shape[1:], bool)
    if nodata is not None:
        for band in data:
            valid &= ~np.isnan(band.astype(float)) if np.isnan(nodata) else band != nodata
    info = describe_raster(path)
    size = 11
    row_off, col_off = rng.integers(-15, 75, 60), rng.integers(-15, 55, 60)
    row_off[0], col_off[0] = 500, 500  # entirely outside
    with PatchReader(info, size, threads=2) as reader:
        reader._blocks_pay_off = lambda *_: by_blocks
        patches = reader.read(row_off, col_off)
    expected, expected_ok = oracle(
        data.astype(np.float64) * scale + offset, valid, row_off, col_off, size
    )
    np.testing.assert_array_equal(patches.valid, expected_ok)
    np.testing.assert_allclose(patches.data, expected, rtol=1e-6)
    assert not np.isnan(patches.data).any()
    assert patches.nodata_share[0] == 1.0
    assert patches.index.tolist() == list(range(60))


def test_extract_patches_centred_on_points(tmp_path):
    data = imagery_data()
    path = write_raster(tmp_path / "r.tif", data, nodata=0)
    # the centre of pixel (row 30, col 20) and a point exactly on the corner of (40, 40)
    points = np.array(
        [[ORIGIN[0] + 20.5 * PIXEL_M, ORIGIN[1] - 30.5 * PIXEL_M],
         [ORIGIN[0] + 40 * PIXEL_M, ORIGIN[1] - 40 * PIXEL_M]]
    )  # fmt: skip
    odd = extract_patches(path, points, 5)
    np.testing.assert_array_equal(odd.data[0, :, 2, 2], data[:, 30, 20])
    even = extract_patches(path, points, 4)
    assert (even.row_off[1], even.col_off[1]) == (38, 38)
    np.testing.assert_array_equal(even.data[1], data[:, 38:42, 38:42])


def test_edge_and_nodata_are_masked_not_dropped(tmp_path):
    path = write_raster(tmp_path / "r.tif", imagery_data(), nodata=0)  # 8 x 8 nodata corner
    corner = np.array([[ORIGIN[0] + 1, ORIGIN[1] - 1]])  # inside pixel (0, 0)
    patches = extract_patches(path, corner, 16)
    assert len(patches) == 1
    # 8 rows/cols of the window lie outside the raster, the next 8 x 8 are nodata
    assert patches.valid[0].sum() == 0
    assert patches.nodata_share[0] == 1.0
    middle = extract_patches(path, np.array([[ORIGIN[0] + 100, ORIGIN[1] - 100]]), 16)
    assert middle.valid[0, :, :].sum() == 16 * 16 - 6 * 6  # rows/cols 2..7 of the corner


def test_iter_patches_covers_every_point_once_and_reuse_matches(tmp_path):
    data = imagery_data()
    path = write_raster(tmp_path / "r.tif", data, nodata=0)
    rng = np.random.default_rng(3)
    points = np.column_stack(
        [ORIGIN[0] + rng.uniform(-50, 700, 103), ORIGIN[1] - rng.uniform(-50, 700, 103)]
    )
    whole = extract_patches(path, points, 9)
    seen = []
    for reuse in (False, True):
        seen = []
        for batch in iter_patches(path, points, 9, batch_size=10, reuse=reuse):
            np.testing.assert_array_equal(batch.data, whole.data[batch.index])
            np.testing.assert_array_equal(batch.valid, whole.valid[batch.index])
            seen.extend(batch.index.tolist())
        assert sorted(seen) == list(range(103))


def test_striped_raster_and_one_thread(tmp_path):
    data = imagery_data()
    path = write_raster(tmp_path / "s.tif", data, block=7)  # 64 is not a multiple: striped
    info = describe_raster(path)
    assert info.block_shape[1] == 64
    points = np.array([[ORIGIN[0] + 320, ORIGIN[1] - 320]])
    one = extract_patches(info, points, 8, threads=1)
    np.testing.assert_array_equal(one.data[0], data[:, 28:36, 28:36])


def test_truncated_raster_is_an_input_error(tmp_path):
    path = write_raster(tmp_path / "r.tif", imagery_data())
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])
    with pytest.raises(InputError, match=r"r\.tif"):
        extract_patches(path, np.array([[ORIGIN[0] + 600, ORIGIN[1] - 600]]), 8)


def _patches(data, valid):
    n = len(data)
    zeros = np.zeros(n, np.int64)
    return Patches(data, valid, zeros, zeros, np.arange(n), ("a", "b"))


def test_band_stats_use_training_samples_and_valid_pixels_only():
    rng = np.random.default_rng(0)
    data = rng.normal(5, 2, size=(6, 2, 8, 8)).astype(np.float32)
    data[:, 1] *= 10
    valid = rng.random((6, 8, 8)) > 0.2
    data[~np.broadcast_to(valid[:, None], data.shape)] = 0.0
    data[4:] += 1000  # test samples: must not move the statistics
    train = [0, 1, 2, 3]
    stats = BandStats.fit(_patches(data, valid), train)
    pixels = data[train].transpose(1, 0, 2, 3)[:, valid[train]]
    np.testing.assert_allclose(stats.mean, pixels.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(stats.std, pixels.std(axis=1), rtol=1e-4)
    normalised = stats.transform(_patches(data, valid))
    assert normalised.dtype == np.float32
    assert (normalised[~np.broadcast_to(valid[:, None], data.shape)] == 0).all()
    train_pixels = normalised[train].transpose(1, 0, 2, 3)[:, valid[train]]
    np.testing.assert_allclose(train_pixels.mean(axis=1), 0, atol=1e-4)
    np.testing.assert_allclose(train_pixels.std(axis=1), 1, atol=1e-3)
    again = BandStats.from_dict(stats.to_dict())
    np.testing.assert_array_equal(again.mean, stats.mean)
    assert again.band_names == ("a", "b")


def test_band_stats_constant_band_and_no_valid_pixel():
    data = np.ones((2, 2, 4, 4), np.float32)
    stats = BandStats.fit(_patches(data, np.ones((2, 4, 4), bool)))
    assert stats.std.tolist() == [1.0, 1.0]
    with pytest.raises(ValueError, match="no valid pixel"):
        BandStats.fit(_patches(data, np.zeros((2, 4, 4), bool)))


# --- patches read on demand (PatchStore, PatchArray) -------------------------------------


def _two_rasters(tmp_path):
    """Two rasters and 300 points each (some at the edge), with the patches read at once."""
    parts = []
    rng = np.random.default_rng(5)
    for k in range(2):
        path = write_raster(tmp_path / f"r{k}.tif", imagery_data(k), nodata=0)
        points = np.column_stack(
            [ORIGIN[0] + rng.uniform(-40, 680, 300), ORIGIN[1] - rng.uniform(-40, 680, 300)]
        )
        parts.append((describe_raster(path), points, extract_patches(path, points, 9)))
    return parts


def _store(parts, cache: bool) -> PatchStore:
    stored, shares = [], []
    for raster, points, _ in parts:
        part, share = sample_patches(raster, points, 9, cache=cache)
        stored.append(part)
        shares.append(share)
    return PatchStore(stored, parts[0][0].band_names, 9, np.concatenate(shares))


@pytest.mark.parametrize("cache", [True, False])
def test_store_reads_what_extract_patches_reads(tmp_path, cache):
    parts = _two_rasters(tmp_path)
    whole = [p for _, _, p in parts]
    data = np.concatenate([p.data for p in whole])
    valid = np.concatenate([p.valid for p in whole])
    store = _store(parts, cache)
    assert store.cached is cache and len(store) == 600
    np.testing.assert_array_equal(
        store.nodata_share, np.concatenate([p.nodata_share for p in whole])
    )
    pick = np.array([599, 3, 300, 299, 3])  # across both rasters, repeated, out of order
    got = store.subset(pick)
    np.testing.assert_array_equal(got.data, data[pick])
    np.testing.assert_array_equal(got.valid, valid[pick])
    np.testing.assert_array_equal(got.row_off, np.concatenate([p.row_off for p in whole])[pick])
    # a view of a view, and the lazy physical array with NaN for nodata
    lazy = store.physical()[pick][np.array([1, 2])]
    expected = np.where(valid[pick[[1, 2]]][:, None], data[pick[[1, 2]]], np.nan)
    np.testing.assert_array_equal(np.asarray(lazy), expected)
    # pooled regions: concatenation keeps every row where it was
    both = PatchStore.concat([store.subset(np.arange(10)), store.subset(np.arange(300, 305))])
    np.testing.assert_array_equal(both.data, data[[*range(10), *range(300, 305)]])


def test_keeping_rows_moves_cached_pixels_in_place(tmp_path):
    (raster, points, whole), *_ = _two_rasters(tmp_path)
    part, _ = sample_patches(raster, points, 9, cache=True)
    rows = np.flatnonzero(np.arange(300) % 7 != 3)
    kept = part.keep(rows)
    np.testing.assert_array_equal(kept.data, whole.data[rows])
    np.testing.assert_array_equal(kept.valid, whole.valid[rows])
    assert np.shares_memory(kept.data, part.data)  # no second copy of the part


def test_standardized_batches_equal_the_whole_and_reading_stays_bounded(tmp_path, monkeypatch):
    parts = _two_rasters(tmp_path)
    store = _store(parts, cache=False)
    lazy = store.physical()
    dense = np.asarray(lazy)
    stats_lazy, stats_dense = BandStats.fit_physical(lazy), BandStats.fit_physical(dense)
    np.testing.assert_array_equal(stats_lazy.mean, stats_dense.mean)
    np.testing.assert_array_equal(stats_lazy.std, stats_dense.std)
    sizes = []
    read = PatchStore.read
    monkeypatch.setattr(
        PatchStore, "read", lambda self, i=None: sizes.append(len(self)) or read(self, i)
    )
    BandStats.fit_physical(lazy)
    assert max(sizes) <= 64  # the statistics read 64 patches at a time, never all 600
    scaled = lazy.map(stats_lazy.transform_physical)
    np.testing.assert_array_equal(
        batch_rows(scaled, np.arange(5, 9)), stats_dense.transform_physical(dense[5:9])
    )


def test_transform_reads_a_store_once_and_equals_the_patches_read(tmp_path, monkeypatch):
    store = _store(_two_rasters(tmp_path), cache=False).subset(np.arange(290, 310))
    patches = store.read()
    stats = BandStats.fit(patches)
    assert patches.read() is patches  # patches in memory are their own reading
    reads = []
    read = PatchStore.read
    monkeypatch.setattr(PatchStore, "read", lambda self, i=None: reads.append(i) or read(self, i))
    np.testing.assert_array_equal(stats.transform(store), stats.transform(patches))
    assert reads == [None]  # once: not once for .data and again for .valid


def test_patch_array_indexing_and_refusals():
    data = np.arange(5 * 2 * 3 * 3, dtype=np.float32).reshape(5, 2, 3, 3)
    valid = np.ones((5, 3, 3), bool)
    zeros = np.zeros(5, int)
    lazy = PatchStore(
        [_Part(None, zeros, zeros, data, valid)], ("a", "b"), 3, np.zeros(5)
    ).physical()
    assert lazy.shape == (5, 2, 3, 3) and len(lazy[1:4]) == 3
    np.testing.assert_array_equal(
        np.asarray(lazy[np.array([True, False, True, False, False])]), data[[0, 2]]
    )
    np.testing.assert_array_equal(np.asarray(lazy[::2]), data[::2])
    with pytest.raises(IndexError):
        lazy[np.zeros((2, 2), int)]


@pytest.mark.parametrize(
    "dtype, scales",
    [("uint16", None), ("int16", None), ("uint8", None), ("float32", None),
     ("uint16", (0.0001, 0.0001, 0.0001))],
)  # fmt: skip
def test_cache_keeps_16_bit_imagery_in_16_bits_and_reads_the_same(tmp_path, dtype, scales):
    from soilsource.data.patches import cache_bytes, cache_dtype

    rng = np.random.default_rng(3)
    top = 255 if dtype == "uint8" else 30000
    data = rng.integers(1, top, (3, 64, 64)).astype(dtype)
    path = write_raster(tmp_path / "r.tif", data, nodata=0, scales=scales)
    raster = describe_raster(path)
    points = np.column_stack(
        [ORIGIN[0] + rng.uniform(-40, 680, 50), ORIGIN[1] - rng.uniform(-40, 680, 50)]
    )
    part, _ = sample_patches(raster, points, 9, cache=True)
    # scaled bands (reflectance = 0.0001 x DN) hold non-integer values: float32
    expected = np.dtype(dtype) if dtype != "float32" and not scales else np.dtype(np.float32)
    assert part.data.dtype == cache_dtype(raster) == expected
    assert cache_bytes(raster, 9) == (3 * expected.itemsize + 1) * 81
    streamed, _ = sample_patches(raster, points, 9, cache=False)
    cached = PatchStore([part], raster.band_names, 9, np.zeros(50))
    read = PatchStore([streamed], raster.band_names, 9, np.zeros(50))
    assert cached.data.dtype == np.float32
    np.testing.assert_array_equal(cached.data, read.data)
    np.testing.assert_array_equal(cached.data, extract_patches(path, points, 9).data)


def test_dropping_the_cache_streams_the_same_values_in_every_view(tmp_path):
    parts = _two_rasters(tmp_path)
    store = _store(parts, cache=True)
    view = store.subset(np.array([5, 350, 5]))
    before = view.data.copy(), view.physical()[np.array([0, 1])].__array__()
    store.drop_cache()
    assert not store.cached and not view.cached  # views share the parts
    np.testing.assert_array_equal(view.data, before[0])
    np.testing.assert_array_equal(np.asarray(view.physical()[np.array([0, 1])]), before[1])
