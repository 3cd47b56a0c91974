"""Dense probability map vs patch-by-patch evaluation.

A 6-band 512 x 512 image and the default 128 px SI-LICNet: 385 x 385 = 148,225 pixels have
a whole patch around them. The dense map computes them all; patch-by-patch evaluation
(cut the patch centred at a pixel, run the model; batches of 64 patches) runs on a random
sample of pixels and is extrapolated to all of them. The table also gives the largest
difference between the two on the sampled pixels, and the peak resident memory.

Usage: ``python benchmarks/bench_dense_map.py [--size 512] [--sample 512] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import torch
from torch import nn

from soilsource.mapping import patch_halo, probability_map
from soilsource.models import SILICNet

BANDS, PATCH_PX, BATCH = 6, 128, 64


def varied_model() -> SILICNet:
    """A random SI-LICNet with probabilities spread over (0, 1), so differences show."""
    torch.manual_seed(0)
    model = SILICNet(BANDS, PATCH_PX)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
        model.head[0].weight.mul_(10.0)
        model.head[-1].weight.mul_(100.0)
        model.eval()
        model.head[-1].bias.sub_(model(torch.randn(8, BANDS, PATCH_PX, PATCH_PX)).mean())
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--sample", type=int, default=512)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    ramp = np.linspace(-2, 2, args.size, dtype=np.float32)
    image = rng.standard_normal((BANDS, args.size, args.size), dtype=np.float32) + ramp
    model = varied_model()
    before, after = patch_halo(PATCH_PX)
    side = args.size - PATCH_PX + 1

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    probability_map(model, image[:, :200, :200])  # warm-up
    start = time.perf_counter()
    dense = probability_map(model, image, tile_px=args.tile)
    dense_s = time.perf_counter() - start
    rss_dense = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    rows = rng.integers(before, args.size - after, args.sample)
    cols = rng.integers(before, args.size - after, args.sample)
    tensor = torch.from_numpy(image)
    probs = []
    start = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, args.sample, BATCH):
            patches = torch.stack(
                [
                    tensor[
                        :, r - before : r - before + PATCH_PX, c - before : c - before + PATCH_PX
                    ]
                    for r, c in zip(rows[lo : lo + BATCH], cols[lo : lo + BATCH], strict=True)
                ]
            )
            probs.append(torch.sigmoid(model(patches)))
    per_pixel_s = (time.perf_counter() - start) / args.sample
    patchwise = torch.cat(probs).numpy()
    diff = np.abs(dense[rows, cols] - patchwise).max()
    patch_s = per_pixel_s * side * side

    print(
        f"{BANDS} x {args.size} x {args.size} image, {PATCH_PX} px patches: {side} x {side} = "
        f"{side * side:,} mapped pixels; tiles of {args.tile} px; {args.threads} threads; load "
        f"average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; patch-by-patch timed on "
        f"{args.sample} random pixels and extrapolated. Peak RSS after the dense map "
        f"{rss_dense:.0f} MiB, {rss_dense - rss_before:.0f} MiB above the process before it "
        "(imports and model).\n"
    )
    print("| method | seconds (all pixels) | pixels / s | speed-up | max abs diff |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| patch by patch (batches of {BATCH}) | {patch_s:.0f} | {1 / per_pixel_s:.0f} "
        f"| 1x | reference |"
    )
    print(
        f"| dense (this package) | {dense_s:.1f} | {side * side / dense_s:,.0f} "
        f"| {patch_s / dense_s:.0f}x | {diff:.1e} |"
    )


if __name__ == "__main__":
    main()
