"""SI-LICNet: a spatial-information-preserving lightweight CNN for patches around samples.

The network answers "is the soil sample at the centre of this patch contaminated?" from
what is where around it: an industrial parcel upwind, a road 50 m away, a river bank. It is
built from two parts with a hard boundary between them:

1. A **trunk** of purely local operations: an anti-aliased stride-2 stem (a fixed binomial
   blur, then a learned 2 x 2 convolution with stride 2; together a 4 x 4 convolution), then
   depthwise-separable blocks (depthwise k x k, pointwise 1 x 1, BatchNorm, ReLU), all
   *valid* convolutions: no zero padding anywhere, so a trunk output depends only on the
   pixels under its receptive field, never on where the patch border falls. BatchNorm in
   evaluation mode is a per-channel affine map.
2. **Ring pooling**, the one linear spatial reduction: the mean of each trunk channel over
   square rings (Chebyshev distance from the patch centre), finer near the centre and
   geometrically coarser outwards. It keeps the one spatial fact that matters after
   rotation and flip augmentation (how far from the sample a feature lies) and is exactly
   invariant to the eight dihedral transforms. A small MLP head then gives one logit.

Nothing nonlinear mixes positions before the pooling, which is what makes exact dense maps
(:mod:`soilsource.mapping.probability`: the trunk runs once over a region, the rings slide
over it as box sums) and exact incremental occlusion (:mod:`soilsource.explain.occlusion`) possible.
The reasoning, costs and measurements are in ``docs/method.md``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = [
    "MAX_BLOCKS",
    "MIN_GRID",
    "BlurStem",
    "RingPooling",
    "SILICNet",
    "random_silicnet",
    "ring_bounds",
]

MAX_BLOCKS = 3
"""Most depthwise-separable blocks chosen automatically (``n_blocks=None``)."""

MIN_GRID = 5
"""Smallest trunk output side (in stem cells) that automatic depth keeps for the rings."""

STEM_STRIDE = 2
"""The stem's stride: the trunk runs on a grid of cells 2 pixels apart."""

SECTORS = (1, 4)
"""Sectors of the pooling: 1 (whole rings) or 4 (each ring cut into quadrants)."""

BLUR = (1.0, 2.0, 1.0)
"""Binomial low-pass applied (separably) before the stem's stride, against aliasing."""


def ring_bounds(levels: int, n_rings: int) -> tuple[int, ...]:
    """Distance levels where rings start: ``0 = b_0 < b_1 < ... < b_R = levels``.

    Ring ``k`` holds the grid cells whose Chebyshev distance level (0 for the central
    cell or 2 x 2 cells, 1 for the square around them, ...) is in ``[b_k, b_k+1)``.
    Boundaries halve from the outside in, so rings are one level wide near the sample and
    wide far away; at most ``levels`` rings (each level its own ring).

    >>> ring_bounds(29, 6)
    (0, 1, 2, 4, 7, 15, 29)
    >>> ring_bounds(3, 6)
    (0, 1, 2, 3)
    """
    if levels < 1 or n_rings < 1:
        raise ValueError(f"levels and n_rings must be >= 1, got {levels} and {n_rings}")
    n = min(n_rings, levels)
    bounds = [0]
    for k in range(1, n + 1):
        bounds.append(max(bounds[-1] + 1, math.floor(levels * 2.0 ** (k - n) + 0.5)))
    return tuple(bounds)


class RingPooling(nn.Module):
    """Means of each channel over square rings (optionally cut into quadrants) around the centre.

    ``forward`` pools maps of exactly ``grid`` x ``grid`` cells to ``(N, D, E)``, one
    element per ring (``n_sectors=1``) or per ring and quadrant (``n_sectors=4``, element
    ``ring * 4 + quadrant``, quadrants north-west, north-east, south-west, south-east with
    row 0 to the north). :meth:`sliding` pools every ``grid`` x ``grid`` window of a larger
    map at once, from summed-area tables, which is how a dense map costs a few operations
    per pixel instead of ``grid ** 2``.

    Every element is a fixed linear combination of box sums (:attr:`boxes`,
    :attr:`box_weights`): a ring is the difference of two centred squares; a ring's
    quadrant the difference of the squares' quadrants. On an odd grid the central row
    and column lie on the axes and count half to each side (the central cell a quarter
    to each quadrant), so the quadrants stay mirror images of each other.

    Why quadrants: rings keep how far from the sample a feature lies and are exactly
    invariant to rotations and flips, which also discards *where* it lies: upwind or
    downwind of a stack, upstream or downstream on a river. Quadrants keep the direction
    at four times the pooled features; they pay only without rotation augmentation
    (``train.augment: none``), which would teach the network to ignore it.

    >>> pool = RingPooling(4, n_rings=2)
    >>> pool.bounds, pool(torch.ones(1, 3, 4, 4)).shape
    ((0, 1, 2), torch.Size([1, 3, 2]))
    >>> RingPooling(5, n_rings=2, n_sectors=4)(torch.ones(1, 3, 5, 5)).shape
    torch.Size([1, 3, 8])
    """

    basis: Tensor
    box_weights: Tensor

    def __init__(self, grid: int, n_rings: int = 6, n_sectors: int = 1) -> None:
        super().__init__()
        if grid < 1:
            raise ValueError(f"the pooled grid must be at least 1 x 1, got {grid}")
        if n_sectors not in SECTORS:
            raise ValueError(f"n_sectors must be one of {SECTORS}, got {n_sectors}")
        self.grid, self.n_sectors = grid, n_sectors
        self.levels = (grid + 1) // 2
        self.bounds = ring_bounds(self.levels, n_rings)
        self.n_rings = len(self.bounds) - 1
        self.n_elements = self.n_rings * n_sectors
        # Boxes (row0, row1, col0, col1 in cells of the window) and, per element, the
        # weight of each box: element = sum_j box_weights[e, j] * (sum of box j).
        boxes: list[tuple[int, int, int, int]] = []
        # per square: (box index, weight of the box in each quadrant)
        square_parts: list[list[tuple[int, list[float]]]] = []
        for bound in self.bounds[1:]:
            s, t = self.side(bound), self.levels - bound
            parts = []
            for (r0, r1, wr), (c0, c1, wc) in itertools.product(
                _halves(t, s, n_sectors), _halves(t, s, n_sectors)
            ):
                if r1 > r0 and c1 > c0:
                    boxes.append((r0, r1, c0, c1))
                    quads = [a * b for a in wr for b in wc]  # NW, NE, SW, SE (or the whole)
                    parts.append((len(boxes) - 1, quads))
            square_parts.append(parts)
        weights = torch.zeros(self.n_elements, len(boxes), dtype=torch.float64)
        for k in range(self.n_rings):
            for q in range(n_sectors):
                e = k * n_sectors + q
                for j, quads in square_parts[k]:
                    weights[e, j] += quads[q]
                for j, quads in square_parts[k - 1] if k else []:
                    weights[e, j] -= quads[q]
        areas = torch.tensor([(r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in boxes]).double()
        weights /= (weights @ areas)[:, None]  # each element a mean: its weights sum to 1
        self.boxes = tuple(boxes)
        cells = torch.zeros(len(boxes), grid, grid, dtype=torch.float64)
        for j, (r0, r1, c0, c1) in enumerate(boxes):
            cells[j, r0:r1, c0:c1] = 1.0
        basis = torch.einsum("ej,jhw->ehw", weights, cells).float()
        self.register_buffer("box_weights", weights, persistent=False)  # (E, J), float64
        self.register_buffer("basis", basis, persistent=False)  # (E, grid, grid)

    def side(self, bound: int) -> int:
        """Side of the centred square of cells whose level is below ``bound``."""
        return max(0, self.grid - 2 * (self.levels - bound))

    def forward(self, features: Tensor) -> Tensor:
        """Pooled means of ``(N, D, grid, grid)`` features: ``(N, D, E)``."""
        if features.shape[-2:] != (self.grid, self.grid):
            raise ValueError(
                f"ring pooling expects {self.grid} x {self.grid} maps, "
                f"got {tuple(features.shape[-2:])}"
            )
        n, d = features.shape[:2]
        cells = features.permute(0, 2, 3, 1).reshape(n, -1, d)  # a view when channels-last
        return (self.basis.flatten(1) @ cells).transpose(1, 2)

    def box_sums(self, features: Tensor, dtype: torch.dtype = torch.float64) -> Tensor:
        """Sum of every :attr:`boxes` box over every window of ``(N, D, h, w)`` features.

        Returns ``(N, D, J, h - grid + 1, w - grid + 1)`` in ``dtype``. Each box comes from
        a float64 summed-area table, so differences of large sums keep float32 accuracy;
        ``dtype`` only decides what the result is stored in (float32 halves the memory of
        a dense map's tile, whose sums are moderate).
        """
        n, d, h, w = features.shape
        oh, ow = h - self.grid + 1, w - self.grid + 1
        if oh < 1 or ow < 1:
            raise ValueError(f"a {h} x {w} map holds no {self.grid} x {self.grid} window")
        sat = features.new_zeros((n, d, h + 1, w + 1), dtype=torch.float64)
        sat[:, :, 1:, 1:] = features.double().cumsum(-2).cumsum(-1)
        out = sat.new_empty((n, d, len(self.boxes), oh, ow), dtype=dtype)
        for j, (r0, r1, c0, c1) in enumerate(self.boxes):
            out[:, :, j] = (
                sat[:, :, r1 : r1 + oh, c1 : c1 + ow]
                - sat[:, :, r0 : r0 + oh, c1 : c1 + ow]
                - sat[:, :, r1 : r1 + oh, c0 : c0 + ow]
                + sat[:, :, r0 : r0 + oh, c0 : c0 + ow]
            )
        return out

    def sliding(self, features: Tensor) -> Tensor:
        """Pooled means of every ``grid`` x ``grid`` window of ``(N, D, h, w)`` features.

        Returns ``(N, D, E, h - grid + 1, w - grid + 1)``: window ``(i, j)`` covers cells
        ``i .. i + grid - 1`` and ``j .. j + grid - 1`` and equals ``forward`` on them.
        """
        sums = self.box_sums(features)
        return torch.einsum("ej,ndjhw->ndehw", self.box_weights, sums).to(features.dtype)


def _halves(t: int, s: int, n_sectors: int) -> list[tuple[int, int, list[float]]]:
    """Segments of the rows ``t .. t + s - 1`` of a centred square with their side weights.

    One segment of weight ``[1]`` without sectors; with quadrants, the first and second
    half with weights ``[1, 0]`` and ``[0, 1]`` (north, south), and on an odd side the
    middle row with ``[0.5, 0.5]``.
    """
    if n_sectors == 1:
        return [(t, t + s, [1.0])]
    half = s // 2
    parts = [(t, t + half, [1.0, 0.0]), (t + s - half, t + s, [0.0, 1.0])]
    if s % 2:
        parts.insert(1, (t + half, t + half + 1, [0.5, 0.5]))
    return parts


def _fused(conv: nn.Conv2d, norm: nn.Module) -> nn.Conv2d:
    """``conv`` followed by ``norm`` (BatchNorm in eval mode, or identity) as one convolution."""
    return fuse_conv_bn_eval(conv, norm) if isinstance(norm, nn.BatchNorm2d) else conv


class _BlockMask(nn.Module):
    """Parametrisation keeping a weight block-diagonal (one block per ensemble member)."""

    mask: Tensor

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, weight: Tensor) -> Tensor:
        return weight * self.mask


class BlurStem(nn.Module):
    """A learned 2 x 2 convolution with stride 2 after a fixed 3 x 3 binomial blur.

    Subsampling without a low-pass makes a network's output jump between patches one pixel
    apart (their cells fall on the other phase of the stride), which shows as a
    checkerboard in dense maps; the blur removes what the stride would alias (BlurPool,
    Zhang 2019). Together they act as one 4 x 4 convolution with stride 2 (:meth:`kernel`);
    run as a blur of the few input bands then the 2 x 2 convolution they cost about a
    quarter of that, with the parameters of the 2 x 2 convolution only.
    """

    kernel_size = 2 + len(BLUR) - 1
    blur: Tensor
    weight: Tensor
    bias: Tensor | None

    def __init__(self, in_channels: int, out_channels: int, bias: bool) -> None:
        super().__init__()
        plain = nn.Conv2d(in_channels, out_channels, 2, bias=bias)  # its initialisation
        self.weight = plain.weight
        self.bias = plain.bias
        taps = torch.tensor(BLUR)
        blur = taps[:, None] * taps[None, :] / taps.sum() ** 2
        self.register_buffer("blur", blur.expand(in_channels, 1, *blur.shape).clone())

    def kernel(self) -> Tensor:
        """The effective ``(out, in, 4, 4)`` kernel: the learned 2 x 2 convolved with the blur."""
        out_ch, in_ch = self.weight.shape[:2]
        flat = self.weight.reshape(out_ch * in_ch, 1, 2, 2)
        return nn.functional.conv_transpose2d(flat, self.blur[:1]).reshape(out_ch, in_ch, 4, 4)

    def parts(self) -> tuple[nn.Conv2d, nn.Conv2d]:
        """The blur and the strided convolution as plain convolutions (to fuse BatchNorm)."""
        in_ch = int(self.blur.shape[0])
        blur = nn.Conv2d(in_ch, in_ch, len(BLUR), groups=in_ch, bias=False)
        conv = nn.Conv2d(
            in_ch, int(self.weight.shape[0]), 2, stride=STEM_STRIDE, bias=self.bias is not None
        )
        blur, conv = (
            m.to(device=self.weight.device, dtype=self.weight.dtype) for m in (blur, conv)
        )
        with torch.no_grad():
            blur.weight.copy_(self.blur)
            conv.weight.copy_(self.weight)
            if self.bias is not None:
                cast(Tensor, conv.bias).copy_(self.bias)
        return blur.eval(), conv.to(memory_format=torch.channels_last).eval()

    def forward(self, x: Tensor) -> Tensor:
        blurred = nn.functional.conv2d(x, self.blur, groups=int(self.blur.shape[0]))
        return nn.functional.conv2d(blurred, self.weight, self.bias, stride=STEM_STRIDE)


class SILICNet(nn.Module):
    """Spatial-information-preserving lightweight CNN: one logit per patch.

    Parameters
    ----------
    in_channels:
        Bands of the (normalised) patches.
    patch_px:
        Side of the square patches the model is built for; ``forward`` accepts exactly
        this size. Even sizes keep the stem's cells symmetric about the patch centre under
        the eight rotations/flips; for an odd size the last row and column fall outside
        the stem's cells and are ignored.
    width:
        Channels of the trunk.
    kernel_size:
        Side of the depthwise kernels (odd). Each block widens the receptive field by
        ``2 * (kernel_size - 1)`` pixels.
    n_blocks:
        Depthwise-separable blocks after the stem; ``None`` picks the most, up to
        :data:`MAX_BLOCKS`, that leave a trunk output of at least :data:`MIN_GRID` cells
        a side for the rings (3 at 24 px and more, 1 at 16 px).
    n_rings:
        Rings of the pooling (fewer when the trunk output is small).
    n_sectors:
        1: whole rings (the default; direction-free, exactly invariant to rotations and
        flips); 4: each ring cut into quadrants, which keeps the direction of a feature
        from the sample (upwind, upstream) for north-up imagery trained without rotation
        augmentation (:class:`RingPooling`).
    hidden, dropout:
        Width and dropout of the MLP head.
    antialias:
        Blur before the stem's stride (the default; :class:`BlurStem`). ``False`` gives a
        plain 2 x 2 stride-2 stem, whose dense maps alternate between neighbouring pixels.
    batchnorm:
        BatchNorm after the stem and each block (the default). Without it the convolutions
        get biases and a training step is 1.3 to 2 times as fast on a CPU (fewer memory
        passes), at the price of BatchNorm's steadier optimisation.
    members:
        Independent networks inside one module (an ensemble): each member has its own
        ``width`` trunk channels (the pointwise convolutions are grouped by member) and
        its own ``hidden`` head units (the head's first layer is block-diagonal), and the
        output is the mean of the members' outputs (:meth:`member_outputs`). Training
        scores each member on its own (:func:`soilsource.learn.training.fit`), so the members
        stay as diverse as separately trained networks, while the module stays one
        SI-LICNet: one linear pooling, so dense maps and incremental occlusion stay exact.
        With a few hundred samples an ensemble is the cheapest large gain we measured
        (``docs/method.md``).

    Notes
    -----
    Normalisation happens outside the model, so an input of 0 is the band mean (the
    occlusion baseline). The model keeps its convolution weights and activations in
    channels-last layout, which is several times faster on CPUs, and in evaluation mode
    without autograd it folds BatchNorm into the convolutions (:meth:`inference_stages`).

    Examples
    --------
    >>> model = SILICNet(6, patch_px=32).eval()
    >>> model(torch.zeros(2, 6, 32, 32)).shape
    torch.Size([2])
    >>> model.n_blocks, model.grid_px, model.receptive_field_px
    (3, 9, 16)
    """

    def __init__(
        self,
        in_channels: int,
        patch_px: int = 128,
        *,
        width: int = 32,
        kernel_size: int = 3,
        n_blocks: int | None = None,
        n_rings: int = 6,
        hidden: int = 32,
        dropout: float = 0.2,
        antialias: bool = True,
        batchnorm: bool = True,
        members: int = 1,
        n_sectors: int = 1,
    ) -> None:
        super().__init__()
        if in_channels < 1 or width < 1 or hidden < 1 or members < 1:
            raise ValueError("in_channels, width, hidden and members must be >= 1")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}")
        stem_kernel = BlurStem.kernel_size if antialias else STEM_STRIDE
        if patch_px < stem_kernel:
            raise ValueError(f"patch_px must be >= {stem_kernel}, got {patch_px}")
        cells, grow = (patch_px - stem_kernel) // STEM_STRIDE + 1, kernel_size - 1
        if n_blocks is None:
            fits = [n for n in range(MAX_BLOCKS + 1) if cells - n * grow >= MIN_GRID]
            n_blocks = max(fits, default=0)
        if n_blocks < 0 or cells - n_blocks * grow < 1:
            raise ValueError(
                f"patch_px={patch_px} is too small for {n_blocks} blocks of kernel "
                f"{kernel_size}: the trunk needs {stem_kernel + STEM_STRIDE * n_blocks * grow} px"
            )
        self.in_channels, self.patch_px = in_channels, patch_px
        self.width, self.kernel_size, self.n_blocks = width, kernel_size, n_blocks
        self.hidden, self.dropout, self.members = hidden, dropout, members
        self.antialias, self.batchnorm, self.stem_kernel = antialias, batchnorm, stem_kernel
        self.grid_px = cells - n_blocks * grow
        channels = width * members
        self.stem = nn.Sequential(
            BlurStem(in_channels, channels, bias=not batchnorm)
            if antialias
            else nn.Conv2d(
                in_channels, channels, STEM_STRIDE, stride=STEM_STRIDE, bias=not batchnorm
            ),
            nn.BatchNorm2d(channels) if batchnorm else nn.Identity(),
            nn.ReLU(inplace=True),
        )
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(channels, channels, kernel_size, groups=channels, bias=False),
                nn.Conv2d(channels, channels, 1, groups=members, bias=not batchnorm),
                nn.BatchNorm2d(channels) if batchnorm else nn.Identity(),
                nn.ReLU(inplace=True),
            )
            for _ in range(n_blocks)
        )
        self.pool = RingPooling(self.grid_px, n_rings, n_sectors)
        self.n_rings, self.n_sectors = self.pool.n_rings, n_sectors
        pooled = self.pool.n_elements
        self.head = nn.Sequential(
            nn.Linear(channels * pooled, hidden * members),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden * members, 1),
        )
        if members > 1:  # each member's head units see only its own pooled channels
            rows = torch.arange(hidden * members) // hidden
            cols = torch.arange(channels * pooled) // (width * pooled)
            mask = (rows[:, None] == cols[None, :]).float()
            with torch.no_grad():  # initialised as `members` separate networks would be
                cast(nn.Linear, self.head[0]).weight.mul_(mask * math.sqrt(members))
                cast(nn.Linear, self.head[3]).weight.div_(math.sqrt(members))
            parametrize.register_parametrization(self.head[0], "weight", _BlockMask(mask))
        self.to(memory_format=torch.channels_last)

    @property
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this architecture: ``SILICNet(**model.config)``."""
        return {
            "in_channels": self.in_channels,
            "patch_px": self.patch_px,
            "width": self.width,
            "kernel_size": self.kernel_size,
            "n_blocks": self.n_blocks,
            "n_rings": self.n_rings,
            "hidden": self.hidden,
            "dropout": self.dropout,
            "antialias": self.antialias,
            "batchnorm": self.batchnorm,
            "members": self.members,
            "n_sectors": self.n_sectors,
        }

    @property
    def block_extents(self) -> tuple[int, ...]:
        """How many stem cells each block trims from each side of its input, in order."""
        return (self.kernel_size - 1,) * self.n_blocks

    @property
    def receptive_field_px(self) -> int:
        """Side, in pixels, of the input square one trunk output sees."""
        return self.stem_kernel + STEM_STRIDE * sum(self.block_extents)

    def features(self, x: Tensor) -> Tensor:
        """Trunk output for inputs of any size >= the receptive field: ``(N, width, h, w)``.

        ``h = (H - stem_kernel) // 2 + 1 - sum(block_extents)``; cell ``i`` sees input
        rows ``2 i`` to ``2 i + receptive_field_px - 1``.
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected (N, {self.in_channels}, H, W) patches, got {tuple(x.shape)}"
            )
        if min(x.shape[-2:]) < self.receptive_field_px:
            raise ValueError(
                f"inputs of {tuple(x.shape[-2:])} px are smaller than the receptive field "
                f"({self.receptive_field_px} px)"
            )
        # Evaluation without autograd (prediction, occlusion, maps): BatchNorm folded into
        # the convolutions saves a memory pass per layer, about a third of the time on a CPU.
        fold = not self.training and not torch.is_grad_enabled()
        f = x.contiguous(memory_format=torch.channels_last)
        for stage in self.inference_stages() if fold else (self.stem, *self.blocks):
            f = stage(f)
        return f

    def inference_stages(self) -> list[nn.Sequential]:
        """The trunk as evaluation-mode stages with BatchNorm folded into the convolutions.

        One stage per spatial layer (the stem, then each block), so a caller can run the
        trunk layer by layer (incremental occlusion) or over large tiles (dense maps) with
        two memory passes fewer per layer. Equal to :meth:`features` up to float rounding.
        """
        if self.training:
            raise RuntimeError("inference_stages needs the model in eval mode (model.eval())")
        first, norm = self.stem[0], self.stem[1]
        if isinstance(first, BlurStem):
            blur, conv = first.parts()
            stem = nn.Sequential(blur, _fused(conv, norm), nn.ReLU(inplace=True))
        else:
            stem = nn.Sequential(_fused(cast(nn.Conv2d, first), norm), nn.ReLU(inplace=True))
        blocks = [
            nn.Sequential(
                block[0], _fused(cast(nn.Conv2d, block[1]), block[2]), nn.ReLU(inplace=True)
            )
            for block in cast(list[nn.Sequential], self.blocks)
        ]
        return [stage.to(memory_format=torch.channels_last) for stage in (stem, *blocks)]

    def pooled(self, x: Tensor) -> Tensor:
        """Ring (and sector) means of the trunk output, flattened channel-major:
        ``(N, width * members * n_rings * n_sectors)``."""
        if x.shape[-2:] != (self.patch_px, self.patch_px):
            raise ValueError(
                f"SILICNet was built for {self.patch_px} x {self.patch_px} px patches, "
                f"got {tuple(x.shape[-2:])}"
            )
        return self.pool(self.features(x)).flatten(1)

    def classify(self, pooled: Tensor) -> Tensor:
        """Outputs ``(M,)`` from pooled features (:meth:`pooled`)."""
        return self.head(pooled).squeeze(-1)

    def forward(self, x: Tensor) -> Tensor:
        """One output per patch of ``(N, C, patch_px, patch_px)``: ``(N,)``.

        What the output means is the training target's: trained on labels
        (``model.target: label``) it is the logit of contamination; trained on
        concentrations (``value``, the default) it is the standardised log concentration
        ``z``, which :class:`soilsource.data.target.LogNormalLink` turns into the median
        (mg/kg) and the probability of exceeding a limit. With ``members > 1`` it is the
        mean of the members' outputs.
        """
        return self.classify(self.pooled(x))

    def member_outputs(self, x: Tensor) -> Tensor:
        """Each member's output ``(N, members)``; their mean is :meth:`forward`.

        The last linear layer sums every member's hidden units; member ``m``'s output is
        its own share of that sum, times ``members``, plus the bias.
        """
        hidden = self.head[:3](self.pooled(x))  # (N, hidden * members)
        last = cast(nn.Linear, self.head[3])
        per = hidden.view(len(hidden), self.members, -1) * last.weight.view(self.members, -1)
        return per.sum(-1) * self.members + last.bias


def random_silicnet(
    channels: int,
    patch_px: int,
    *,
    seed: int = 0,
    spread: bool = True,
    centre_on: int | Tensor | None = None,
    **kwargs: Any,
) -> SILICNet:
    """An untrained SI-LICNet with random BatchNorm statistics, for timing and exactness checks.

    Speed does not depend on the weights, but comparisons of two computations (dense vs
    patch by patch, incremental vs Captum occlusion) only show differences where the
    probabilities are not all near 0.5: ``spread`` scales the head so they span (0, 1),
    and ``centre_on`` (patches, or a number of random patches drawn after the weights)
    shifts the last bias so that their mean logit is 0.

    >>> model = random_silicnet(2, 16, centre_on=4)
    >>> model.training
    False
    """
    torch.manual_seed(seed)
    model = SILICNet(channels, patch_px, **kwargs)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            cast(Tensor, bn.running_mean).uniform_(-0.5, 0.5)
            cast(Tensor, bn.running_var).uniform_(0.5, 2.0)
        if spread:
            first: Any = model.head[0]  # a Linear, maybe parametrised (members > 1)
            weight = (
                first.parametrizations.weight.original  # members > 1: the masked weight's source
                if parametrize.is_parametrized(first)
                else first.weight
            )
            weight.mul_(10.0)
            cast(nn.Linear, model.head[-1]).weight.mul_(100.0)
        model.eval()
        if centre_on is not None:
            if isinstance(centre_on, int):
                centre_on = torch.randn(centre_on, channels, patch_px, patch_px)
            cast(nn.Linear, model.head[-1]).bias.sub_(model(centre_on).mean())
    return model
