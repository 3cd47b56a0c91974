"""Cost of SI-LICNet against the torchvision baselines at the same input.

Parameters, multiply-accumulates per patch (PyTorch's FlopCounterMode, MAC = FLOP / 2;
it counts convolutions and matrix products, not BatchNorm or activations), and
throughput on the CPU: inference (eval mode, no autograd) and one training step
(forward, backward and an SGD update; a cost indicator, not the training-time benchmark).
Input: 6 x 128 x 128 patches (Sentinel-2 bands, 1280 m at 10 m), batches of 64, 2 threads,
channels-last memory for every model, best of several repeats (the machine is shared).

With ``--design`` (also run by default) a second table compares trunk designs that were
candidates for SI-LICNet at the same width (32 channels, three depthwise-separable blocks),
trunk only: why the stem has stride 2 and the depthwise kernels are not dilated.

Usage: ``python benchmarks/bench_model_cost.py [--threads 2] [--repeats 5] [--no-design]``.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from soilsource.models import SILICNet
from soilsource.models.baselines import mobilenet_v3_small, resnet18

BANDS, PATCH_PX, BATCH = 6, 128, 64
REGION_SAMPLES, REGION_FITS, EPOCHS = 250, 6, 20
"""Training time per region is estimated as one region's cross-validation at the pipeline's
defaults: 5 folds + the final model (6 fits) of 20 epochs (``TrainSettings``: no early
stopping) over 250 samples (each fold trains on about 4/5), at the measured training-step
rate: an upper bound of the training arithmetic, without data loading."""


def macs_per_patch(model: nn.Module) -> float:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, BANDS, PATCH_PX, PATCH_PX))
    return counter.get_total_flops() / 2


def best_seconds(step, repeats: int) -> float:
    step()  # warm-up: allocator, oneDNN primitives
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        best = min(best, time.perf_counter() - start)
    return best


def measure(name: str, model: nn.Module, repeats: int) -> dict[str, float | str]:
    model = model.to(memory_format=torch.channels_last)
    x = torch.randn(BATCH, BANDS, PATCH_PX, PATCH_PX).contiguous(memory_format=torch.channels_last)
    y = (torch.arange(BATCH) % 2).float()
    model.eval()
    macs = macs_per_patch(model)

    def infer() -> None:
        with torch.inference_mode():
            model(x)

    optimiser = torch.optim.SGD(model.parameters(), lr=1e-3)

    def train_step() -> None:
        optimiser.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(model(x).reshape(-1), y).backward()
        optimiser.step()

    infer_s = best_seconds(infer, repeats)
    model.train()
    train_s = best_seconds(train_step, max(2, repeats // 2))
    return {
        "model": name,
        "params": sum(p.numel() for p in model.parameters()),
        "mmac": macs / 1e6,
        "infer": BATCH / infer_s,
        "train": BATCH / train_s,
    }


def _block(width: int, dilation: int) -> list[nn.Module]:
    return [
        nn.Conv2d(width, width, 3, dilation=dilation, groups=width, bias=False),
        nn.Conv2d(width, width, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    ]


class _Trunk(nn.Module):
    """A candidate trunk plus a global mean and a linear logit (the cheap part of a model)."""

    def __init__(self, stem_stride: int, dilations: tuple[int, ...], width: int = 32) -> None:
        super().__init__()
        stem = nn.Conv2d(BANDS, width, stem_stride, stride=stem_stride, bias=False)
        layers = [stem, nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        for d in dilations:
            layers += _block(width, d)
        self.trunk = nn.Sequential(*layers)
        self.out = nn.Linear(width, 1)
        self.receptive_field_px = stem_stride * (1 + 2 * sum(dilations))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.trunk(x).mean(dim=(2, 3))).squeeze(-1)


def design_table(repeats: int) -> None:
    candidates = {
        "stride-1 stem, dilated depthwise (1, 2, 4)": _Trunk(1, (1, 2, 4)),
        "stride-1 stem, depthwise 3 x 3": _Trunk(1, (1, 1, 1)),
        "stride-2 stem, dilated depthwise (1, 2, 4)": _Trunk(2, (1, 2, 4)),
        "stride-2 stem, depthwise 3 x 3 (SI-LICNet)": _Trunk(2, (1, 1, 1)),
    }
    print("\nTrunk designs (32 channels, 3 blocks; trunk + global mean):\n")
    print(
        "| trunk | receptive field px | MMAC / patch | inference patches/s | train-step patches/s |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, model in candidates.items():
        r = measure(name, model, repeats)
        print(
            f"| {name} | {model.receptive_field_px} | {r['mmac']:.1f} | {r['infer']:.0f} "
            f"| {r['train']:.0f} |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-design", dest="design", action="store_false")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SILICNet(BANDS, PATCH_PX)
    rows = [
        measure("SI-LICNet", model, args.repeats),
        measure(
            "SI-LICNet, batchnorm=False", SILICNet(BANDS, PATCH_PX, batchnorm=False), args.repeats
        ),
        measure("MobileNetV3-small", mobilenet_v3_small(BANDS, PATCH_PX), args.repeats),
        measure("ResNet18", resnet18(BANDS, PATCH_PX), args.repeats),
    ]
    print(
        f"Input {BANDS} x {PATCH_PX} x {PATCH_PX}, batch {BATCH}, {args.threads} threads, "
        f"best of {args.repeats}; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} CPUs. SI-LICNet: {model.n_blocks} blocks, trunk grid "
        f"{model.grid_px} x {model.grid_px} cells, receptive field {model.receptive_field_px} "
        f"px, {model.n_rings} rings.\n"
    )
    print(
        "| model | parameters | MMAC / patch | inference patches/s | train-step patches/s "
        f"| training s / region (est.: {REGION_FITS} fits x {EPOCHS} epochs x "
        f"{REGION_SAMPLES} samples) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        region_s = REGION_FITS * EPOCHS * REGION_SAMPLES / r["train"]
        print(
            f"| {r['model']} | {r['params']:,} | {r['mmac']:.1f} | {r['infer']:.0f} "
            f"| {r['train']:.0f} | {region_s:.0f} |"
        )
    if args.design:
        design_table(args.repeats)


if __name__ == "__main__":
    main()
