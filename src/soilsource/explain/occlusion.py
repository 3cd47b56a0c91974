"""Occlusion sensitivity, computed exactly and incrementally.

Occlusion asks, for every place in a patch, how much the predicted probability of
contamination drops when that place is hidden (set to the baseline, by default 0 = the band
mean of normalised inputs). A square window slides over the patch; each pixel gets the mean
drop over all windows that cover it. The values are Captum's ``Occlusion`` exactly
(Captum is the test oracle):

    Occlusion(lambda t: torch.sigmoid(model(t)).reshape(-1)).attribute(
        x, sliding_window_shapes=(C, window_px, window_px),
        strides=(C, stride_px, stride_px), baselines=baseline)[:, 0]

Window placement (as Captum): windows start at rows ``0, s, 2s, ...`` up to the first start
``>= H - window`` (``ceil((H - window) / s) + 1`` starts), so when ``H - window`` is not a
multiple of the stride the last window overhangs the edge and is cut to the patch. Pixels
average the drops of the windows covering them (every pixel is covered at least once).

Why incremental (the KRYPTON idea, Nakandala et al., SIGMOD 2019): a window changes only a
bounded part of each layer's output, its projective field, which grows by the kernel extent
of each layer. For SI-LICNet we run the unoccluded patch once and keep every layer's
activations (on a zero-padded frame, so windows near the border need no special case: the
frame's extra cells only feed cells that the pooling weighs by zero). For a batch of windows
we then recompute, layer by layer, only the changed cells: cut the cells the layer needs
from the cached input, paste in the previous layer's recomputed cells, run the layer on
that small crop. The ring pooling is linear, so the pooled features move by the ring-weighted
sum of the change over the changed cells alone; the head then runs on the updated features.
At the defaults (128 px patch, 16 px window, 4 px stride) a window changes 9 x 9 of the
63 x 63 stem cells and 11 x 11 to 15 x 15 of each block's 61 x 61 to 57 x 57 outputs
(2 to 7 %): about 0.8 of the 18 MMAC of a full pass (see ``docs/method.md``). Windows go
in batches sized for the CPU's caches (``_BATCH_BYTES``).
"""

from __future__ import annotations

from typing import Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from soilsource.models.registry import network_spec
from soilsource.models.silicnet import STEM_STRIDE, SILICNet

__all__ = ["occlusion_sensitivity", "window_starts"]

Method = Literal["auto", "incremental", "full"]
Output = Literal["probability", "raw"]
"""What a drop is measured in: ``sigmoid`` of the model's output, or the output itself
(a logit, or for a model of the concentration the standardised log concentration ``z``)."""


def window_starts(size: int, window_px: int, stride_px: int) -> np.ndarray:
    """Starts of Captum's occluding windows along an axis of ``size`` pixels.

    >>> window_starts(11, 4, 3).tolist()  # the last window (9..12) is cut to 9..10
    [0, 3, 6, 9]
    >>> window_starts(10, 4, 3).tolist()
    [0, 3, 6]
    """
    count = -(-(size - window_px) // stride_px) + 1
    return np.arange(count, dtype=np.int64) * stride_px


def occlusion_sensitivity(
    model: nn.Module,
    x: Tensor,
    window_px: int,
    stride_px: int,
    baseline: float | Tensor = 0.0,
    *,
    batch_windows: int | None = None,
    method: Method = "auto",
    output: Output = "probability",
) -> Tensor:
    """Mean drop of the predicted probability over the occluding windows covering each pixel.

    Parameters
    ----------
    model:
        Returns one logit per patch, shape ``(N,)``. Run in evaluation mode (its mode is
        restored afterwards).
    x:
        Patches ``(N, C, H, W)``, normalised as the model expects; all values finite.
    window_px, stride_px:
        Side and step of the square occluding window, in pixels. The stride may not
        exceed the window (some pixels would never be occluded) unless the window spans
        the patch.
    baseline:
        Value of occluded pixels: a number, or a tensor broadcastable to ``x`` (e.g.
        per-band values of shape ``(1, C, 1, 1)``).
    batch_windows:
        Occluded windows evaluated together; memory grows with it. Default: for
        incremental, as many whole rows of windows as keep a batch's largest crop within
        6 MiB on a CPU (145 windows at the defaults), 48 MiB on a GPU (always at least one
        row); 64 for full.
    method:
        ``"incremental"`` (SI-LICNet only: recompute only what a window changes),
        ``"full"`` (any model: one full forward pass per window, batched), or
        ``"auto"``: incremental for SI-LICNet, else full.
    output:
        ``"probability"``: drops of ``sigmoid(model(x))`` (Captum with that forward);
        ``"raw"``: drops of ``model(x)`` itself (Captum with ``model`` as the forward), for
        a model of the concentration the standardised log concentration, so a drop of
        0.1 is a tenth of the training samples' log-concentration spread.

    Returns
    -------
    Tensor
        ``(N, H, W)`` float32 on ``x``'s device: positive where hiding the place lowers
        the probability of contamination.

    Examples
    --------
    >>> from soilsource.models import SILICNet
    >>> model = SILICNet(3, patch_px=24).eval()
    >>> occlusion_sensitivity(model, torch.randn(2, 3, 24, 24), 8, 4).shape
    torch.Size([2, 24, 24])
    """
    if x.ndim != 4:
        raise ValueError(f"x must be (N, C, H, W), got shape {tuple(x.shape)}")
    _, _, h, w = x.shape
    for name, size in (("height", h), ("width", w)):
        if not 1 <= window_px <= size:
            raise ValueError(f"window_px={window_px} must be between 1 and the patch {name} {size}")
        if stride_px < 1 or (stride_px > window_px and size > window_px):
            raise ValueError(
                f"stride_px={stride_px} must be between 1 and window_px={window_px}, "
                "or some pixels are never occluded"
            )
    if not torch.isfinite(x).all():
        raise ValueError("x holds NaN or infinite values; fill or mask nodata first")
    entry = network_spec(model)
    incremental = entry is not None and entry.incremental_occlusion
    if method == "auto":
        method = "incremental" if incremental else "full"
    if method == "incremental" and not incremental:
        raise TypeError(f"incremental occlusion needs a SILICNet, got {type(model).__name__}")
    if method not in ("incremental", "full"):
        raise ValueError(f"method must be 'auto', 'incremental' or 'full', got {method!r}")
    if output not in ("probability", "raw"):
        raise ValueError(f"output must be 'probability' or 'raw', got {output!r}")
    squash = output == "probability"
    if batch_windows is not None and batch_windows < 1:
        raise ValueError(f"batch_windows must be >= 1, got {batch_windows}")

    param = next(model.parameters())
    xd = x.detach().to(device=param.device, dtype=param.dtype)
    base = torch.as_tensor(baseline, device=xd.device, dtype=xd.dtype).expand_as(xd)
    ys, xs = window_starts(h, window_px, stride_px), window_starts(w, window_px, stride_px)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            if method == "incremental":
                drops = _incremental_drops(
                    cast(SILICNet, model), xd, base, ys, xs, window_px, batch_windows, squash
                )
            else:
                per_batch = 64 if batch_windows is None else batch_windows
                drops = _full_drops(model, xd, base, ys, xs, window_px, per_batch, squash)
            maps = _average_over_windows(drops, (h, w), window_px, stride_px)
    finally:
        model.train(was_training)
    return maps.to(x.device)


def _average_over_windows(
    drops: Tensor, size: tuple[int, int], window_px: int, stride_px: int
) -> Tensor:
    """Per-pixel mean of the drops ``(N, Ky, Kx)`` of the windows covering each pixel."""
    ones = drops.new_ones((1, 1, window_px, window_px))
    total = F.conv_transpose2d(drops[:, None], ones, stride=stride_px)
    count = F.conv_transpose2d(torch.ones_like(drops[:1, None]), ones, stride=stride_px)
    h, w = size
    return (total / count)[:, 0, :h, :w]


def _full_drops(
    model: nn.Module,
    x: Tensor,
    base: Tensor,
    ys: np.ndarray,
    xs: np.ndarray,
    window_px: int,
    batch_windows: int,
    squash: bool = True,
) -> Tensor:
    """Drops ``(N, Ky, Kx)`` by full forward passes on occluded copies, many per batch."""
    n = x.shape[0]
    starts = [(int(a), int(b)) for a in ys for b in xs]
    drops = x.new_empty((n, len(starts)))
    for i in range(n):
        for lo in range(0, len(starts), batch_windows):
            chunk = starts[lo : lo + batch_windows]
            # Row 0 stays unoccluded: the reference probability from the same batch.
            batch = x[i].expand(len(chunk) + 1, *x.shape[1:]).clone()
            for j, (a, b) in enumerate(chunk, start=1):
                region = (slice(None), slice(a, a + window_px), slice(b, b + window_px))
                batch[j][region] = base[i][region]
            out = model(batch).reshape(-1)
            prob = torch.sigmoid(out) if squash else out
            drops[i, lo : lo + len(chunk)] = prob[0] - prob[1:]
    return drops.reshape(n, len(ys), len(xs))


def _gather(frame: Tensor, rows: np.ndarray, cols: np.ndarray, size: int) -> Tensor:
    """Square crops of a channels-last ``(H, W, C)`` frame at every (row, col) start pair.

    Returns a new ``(len(rows) * len(cols), size, size, C)`` tensor (never a view of the
    frame), row-major. Evenly spaced starts (the usual case) are one strided view copied
    once; others are stacked slice by slice.
    """
    steps = [int(s[1] - s[0]) if len(s) > 1 else 1 for s in (rows, cols)]
    if all(st >= 1 and np.all(np.diff(s) == st) for s, st in zip((rows, cols), steps, strict=True)):
        (r0, c0), (dr, dc) = (int(rows[0]), int(cols[0])), steps
        view = frame[r0 : r0 + dr * (len(rows) - 1) + size, c0 : c0 + dc * (len(cols) - 1) + size]
        view = view.unfold(0, size, dr).unfold(1, size, dc)  # (rows, cols, C, size, size)
        crops = view.permute(0, 1, 3, 4, 2).clone(memory_format=torch.contiguous_format)
        return crops.reshape(-1, size, size, frame.shape[-1])  # a copy: callers write to it
    return torch.stack(
        [frame[r : r + size, c : c + size] for r in rows.tolist() for c in cols.tolist()]
    )


def _nchw(t: Tensor) -> Tensor:
    """View ``(B, H, W, C)`` as ``(B, C, H, W)`` in channels-last memory (no copy)."""
    return t.permute(0, 3, 1, 2)


def _nhwc(t: Tensor) -> Tensor:
    """``(B, C, H, W)`` as ``(B, H, W, C)``, contiguous (a view when already channels-last)."""
    return t.permute(0, 2, 3, 1).contiguous()


def _incremental_drops(
    model: SILICNet,
    x: Tensor,
    base: Tensor,
    ys: np.ndarray,
    xs: np.ndarray,
    window_px: int,
    batch_windows: int | None,
    squash: bool = True,
) -> Tensor:
    """Drops ``(N, Ky, Kx)`` recomputing only each window's projective field (see module doc).

    Frames: the input is zero-padded by ``pad`` pixels on every side; a cached layer's
    cell ``i`` is the real stem cell ``i - pad // 2`` (valid convolutions keep that offset).
    Stem cell ``i`` sees pixels ``2 i .. 2 i + k - 1`` (``k``: the stem kernel), so a window
    over pixels ``a .. a + w - 1`` changes the stem cells from ``c = ceil((a - k + 1) / 2)``
    to ``(a + w - 1) // 2``, at most ``s0`` of them; block ``b`` changes cells
    ``c - E_b .. c + s0 - 1`` (``E_b``: the extents of blocks up to ``b``, summed) and needs
    its input's cells ``c - E_b .. c + s0 + e_b - 1``: the previous layer's changed cells
    plus ``e_b`` on each side, taken from the cache.
    """
    n, _, h, w = x.shape
    scalar = float(base.flatten()[0]) if base.stride() == (0,) * base.ndim else None
    members = _member_stages(model)  # each member's trunk on its own, on its own channels
    extents = model.block_extents
    total_extent, grid = sum(extents), model.grid_px
    kernel = model.stem_kernel
    cy, cx = -((kernel - 1 - ys) // STEM_STRIDE), -((kernel - 1 - xs) // STEM_STRIDE)
    # Changed stem cells per window: at most s0 a side, whatever the window's phase.
    last = np.concatenate(
        [(ys + window_px - 1) // STEM_STRIDE - cy, (xs + window_px - 1) // STEM_STRIDE - cx]
    )
    s0 = int(last.max()) + 1
    s_last = s0 + total_extent  # changed cells of the last block, a side
    steps = np.diff(np.concatenate([ys, xs, [0]]))
    half_pad = total_extent + int(steps.max(initial=0)) + kernel  # covers every overhang
    pad = STEM_STRIDE * half_pad
    # Occluded pixels of each window's stem crop (the pixels of s0 cells from cell c).
    size = STEM_STRIDE * (s0 - 1) + kernel
    px = torch.arange(size, device=x.device)
    oy = torch.as_tensor(ys - STEM_STRIDE * cy, device=x.device)[:, None]
    ox = torch.as_tensor(xs - STEM_STRIDE * cx, device=x.device)[:, None]
    rows_in = (px >= oy) & (px < oy + window_px)  # (Ky, 2 s0)
    cols_in = (px >= ox) & (px < ox + window_px)  # (Kx, 2 s0)
    inside = (rows_in[:, None, :, None, None] & cols_in[None, :, None, :, None]).flatten(0, 1)
    # Ring weights on the last layer's frame, zero outside the real grid.
    rings = model.pool.basis.permute(1, 2, 0)
    frame_h, frame_w = [(n + 2 * pad - kernel) // STEM_STRIDE + 1 - total_extent for n in (h, w)]
    ring_frame = rings.new_zeros((frame_h, frame_w, rings.shape[-1]))
    ring_frame[half_pad : half_pad + grid, half_pad : half_pad + grid] = rings
    # Each block's input crop, a side: its changed cells plus its extent on either side.
    sides = [s0 + sum(extents[:b]) + 2 * e for b, e in enumerate(extents)]
    # Whole rows of windows per batch, as many as keep the largest crop within the budget
    # (_BATCH_BYTES: the crops are then reused from the CPU's caches).
    widest = max([size**2 * x.shape[1]] + [side**2 * model.width for side in sides])
    per_window = widest * x.element_size()
    budget = _BATCH_BYTES if x.device.type == "cpu" else _BATCH_BYTES_GPU
    cap = batch_windows if batch_windows is not None else max(1, budget // per_window)
    per_batch = max(1, cap // len(xs))
    batches = []
    for top in range(0, len(ys), per_batch):
        by = cy[top : top + per_batch]
        r, q = by - total_extent + half_pad, cx - total_extent + half_pad
        # (B, rings, cells): the ring weights over each window's changed cells, the same
        # for every patch, transposed so that one batched product pools the change.
        weights = _gather(ring_frame, r, q, s_last).flatten(1, 2).transpose(1, 2).contiguous()
        batches.append((by, slice(top * len(xs), (top + len(by)) * len(xs)), r, q, weights))

    drops = x.new_empty((n, len(ys) * len(xs)))
    for i in range(n):
        pooled0 = model.pooled(x[i : i + 1])[0]
        frame = F.pad(x[i : i + 1], (pad,) * 4).contiguous(memory_format=torch.channels_last)
        caches = []
        for stages in members:  # every layer's activations of the unoccluded patch
            cache, act = [_nhwc(frame)[0]], frame
            for stage in stages:
                act = stage(act)
                cache.append(_nhwc(act)[0])
            caches.append(cache)
        base_frame = None if scalar else _nhwc(F.pad(base[i : i + 1], (pad,) * 4))[0]
        for by, sl, r_last, q_last, weights in batches:
            # Stem: the input pixels of the changed cells, with the window substituted.
            r, q = STEM_STRIDE * by + pad, STEM_STRIDE * cx + pad
            hidden = scalar if base_frame is None else _gather(base_frame, r, q, size)
            pixels = torch.where(inside[sl], hidden, _gather(caches[0][0], r, q, size))  # type: ignore[arg-type]  # a scalar baseline broadcasts
            deltas = []
            for (stem, *blocks), cache in zip(members, caches, strict=True):
                changed = _nhwc(stem(_nchw(pixels)))
                done = 0  # extent so far: the changed cells start at c - done
                for b, (block, e) in enumerate(zip(blocks, extents, strict=True)):
                    r, q = by - done - e + half_pad, cx - done - e + half_pad
                    need = _gather(cache[b + 1], r, q, sides[b])
                    need[:, e : e + s0 + done, e : e + s0 + done] = changed
                    changed = _nhwc(block(_nchw(need)))
                    done += e
                # Ring sums over the changed cells after the window, minus before it.
                before = _gather(cache[-1], r_last, q_last, s_last).flatten(1, 2)
                delta = torch.bmm(weights, before)  # (B, rings, channels)
                delta = torch.baddbmm(delta, weights, changed.flatten(1, 2), beta=-1)
                deltas.append(delta.transpose(1, 2).flatten(1))  # channel-major, as pooled
            delta = torch.cat(deltas, dim=1)  # members' channels follow each other
            # The unoccluded patch rides in the same head call: a window that changes
            # nothing then drops by exactly 0, not by the rounding of another batch size.
            out = model.classify(torch.cat([pooled0[None], pooled0 + delta]))
            prob = torch.sigmoid(out) if squash else out
            drops[i, sl] = prob[0] - prob[1:]
    return drops.reshape(n, len(ys), len(xs))


_BATCH_BYTES = 6 * 2**20
"""Largest crop of a batch of windows, in bytes. On a 2-core EPYC (2 MiB L2 a core, 32 MiB
L3) a sweep of 58 to 1,024 windows of SI-LICNet's default crops (37 KiB each) found 116 to
232 fastest with one member and three; ``bench_occlusion`` times this default against
1,024-window batches in the same run (session 13: 0.029 against 0.040 s a patch with one
member, 0.079 against 0.119 with three)."""
_BATCH_BYTES_GPU = 48 * 2**20
"""The same on a GPU, which wants large batches rather than small crops: about 1,300
windows at the defaults, so a patch's 841 windows stay one batch, as before session 13
(not re-measured on a GPU since)."""


def _member_stages(model: SILICNet) -> list[list[nn.Sequential]]:
    """Each ensemble member's trunk as its own evaluation stages (one list for one network).

    The members of an ensemble share no trunk weight (the pointwise convolutions are
    grouped by member), so each can run alone on ``width`` channels instead of all
    ``members * width`` together: the same arithmetic, on tensors a member's size, which
    stay in the CPU's caches (``docs/benchmarks.md``, ``bench_occlusion.members3``).
    """
    stages = model.inference_stages()
    if model.members == 1:
        return [stages]
    out = []
    for m in range(model.members):
        keep = slice(m * model.width, (m + 1) * model.width)
        stem, *blocks = stages
        out.append([_member_stem(stem, keep), *(_member_block(b, keep) for b in blocks)])
    return out


def _conv_like(conv: nn.Conv2d, weight: Tensor, bias: Tensor | None, groups: int) -> nn.Conv2d:
    """A convolution with ``conv``'s geometry and the given weights (channels-last, eval)."""
    out = nn.Conv2d(
        weight.shape[1] * groups,
        weight.shape[0],
        conv.kernel_size,  # type: ignore[arg-type]  # torch: tuple[int, ...], a Conv2d's is a pair
        stride=conv.stride,  # type: ignore[arg-type]
        groups=groups,
        bias=bias is not None,
    ).to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            cast(Tensor, out.bias).copy_(bias)
    return out.to(memory_format=torch.channels_last).eval()


def _member_stem(stem: nn.Sequential, keep: slice) -> nn.Sequential:
    """The stem's output channels ``keep``: its last convolution sliced (a blur stays whole)."""
    *before, last, relu = stem
    conv = cast(nn.Conv2d, last)
    bias = conv.bias[keep] if conv.bias is not None else None
    return nn.Sequential(*before, _conv_like(conv, conv.weight[keep], bias, 1), relu)


def _member_block(block: nn.Sequential, keep: slice) -> nn.Sequential:
    """A block on one member's channels: the depthwise and the grouped pointwise sliced."""
    depthwise, pointwise = cast(nn.Conv2d, block[0]), cast(nn.Conv2d, block[1])
    relu = block[2]
    width = keep.stop - keep.start
    dw = _conv_like(depthwise, depthwise.weight[keep], None, width)
    bias = pointwise.bias[keep] if pointwise.bias is not None else None
    pw = _conv_like(pointwise, pointwise.weight[keep], bias, 1)  # (width, width, 1, 1)
    return nn.Sequential(dw, pw, relu)
