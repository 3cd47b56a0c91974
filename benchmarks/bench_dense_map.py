"""Dense probability map vs patch-by-patch evaluation.

A 6-band 512 x 512 image and the default 128 px SI-LICNet: 385 x 385 = 148,225 pixels have
a whole patch around them. The dense map computes them all; patch-by-patch evaluation
(cut the patch centred at a pixel, run the model; batches of 64 patches) runs on a random
sample of pixels and is extrapolated to all of them. Besides wall time, CPU time (all
threads of the process): on a shared machine the wall time grows with the other jobs, the
CPU time much less, so the speed-up is taken from CPU time. The table also gives the largest
difference between the two on the sampled pixels, and the peak resident memory.

A second table checks that dense maps are smooth at the pixel scale on real data: SI-LICNet
with and without the anti-aliasing blur in its stride-2 stem, trained on the Meuse samples
(``examples/meuse``, Cd > 2 mg/kg, 24 px patches of 40 m, all 155 samples, 150 full-batch
epochs with rotations and flips: a model that fits its data closely, the case where
artifacts show most), and the mean change of the mapped probability between pixels 1 and 2
apart. A smooth map changes less over 1 pixel than over 2 (ratio below 1); a map that
alternates between the stride's two phases changes more (ratio above 1).

Usage: ``python benchmarks/bench_dense_map.py [--size 512] [--sample 512] [--threads 2]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
import torch
from torch import nn

from soilsource.mapping.probability import patch_halo, probability_map
from soilsource.models import SILICNet
from soilsource.models.silicnet import random_silicnet

BANDS, PATCH_PX, BATCH = 6, 128, 64
MEUSE = Path(__file__).resolve().parents[1] / "examples" / "meuse"


def varied_model(members: int = 1) -> SILICNet:
    """A random SI-LICNet with probabilities spread over (0, 1), so differences show."""
    return random_silicnet(BANDS, PATCH_PX, centre_on=8, members=members)


def meuse_patches(size: int) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """Normalised Landsat bands, patches around the samples (band mean outside), labels."""
    with rasterio.open(MEUSE / "landsat2000.tif") as src:
        image = src.read().astype(np.float32)
        transform = src.transform
    image = (image - image.mean(axis=(1, 2), keepdims=True)) / image.std(axis=(1, 2), keepdims=True)
    samples = pd.read_csv(MEUSE / "samples.csv")
    rows, cols = rasterio.transform.rowcol(transform, samples.x, samples.y)
    before, _ = patch_halo(size)
    padded = np.pad(image, ((0, 0), (size, size), (size, size)))
    patches = [
        padded[
            :, r - before + size : r - before + 2 * size, c - before + size : c - before + 2 * size
        ]
        for r, c in zip(rows, cols, strict=True)
    ]
    labels = torch.tensor((samples.cadmium > 2.0).to_numpy(), dtype=torch.float32)
    return image, torch.from_numpy(np.stack(patches)), labels


def fit_meuse(x: torch.Tensor, y: torch.Tensor, antialias: bool, seed: int, epochs: int):
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = SILICNet(x.shape[1], x.shape[-1], width=16, hidden=16, dropout=0.3, antialias=antialias)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-3)
    for _ in range(epochs):
        k = torch.randint(0, 8, (len(x),), generator=generator)
        turned = torch.stack(
            [torch.rot90(p, int(t) % 4, (1, 2)) for p, t in zip(x, k, strict=True)]
        )
        turned = torch.where((k >= 4)[:, None, None, None], turned.flip(-1), turned)
        optimiser.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(turned), y)
        loss.backward()
        optimiser.step()
    return model.eval(), loss.item()


def phase_table(seeds: int, epochs: int) -> None:
    if not (MEUSE / "landsat2000.tif").exists():
        print(f"\n(no {MEUSE}: pixel-scale smoothness on Meuse skipped)")
        return
    image, x, y = meuse_patches(24)
    print(
        f"\nPixel-scale smoothness of dense maps on Meuse (mean over {seeds} seeds; "
        f"|dp| over rows and columns):\n"
    )
    print("| stem | mean abs dp, 1 px | mean abs dp, 2 px | ratio 1 px / 2 px | train loss |")
    print("|---|---:|---:|---:|---:|")
    for antialias in (False, True):
        d1, d2, losses = [], [], []
        for seed in range(seeds):
            model, loss = fit_meuse(x, y, antialias, seed, epochs)
            prob = probability_map(model, image)
            d1.append(np.nanmean([np.nanmean(np.abs(np.diff(prob, 1, axis=a))) for a in (0, 1)]))
            d2.append(
                np.nanmean(
                    [
                        np.nanmean(np.abs(prob[2:] - prob[:-2])),
                        np.nanmean(np.abs(prob[:, 2:] - prob[:, :-2])),
                    ]
                )
            )
            losses.append(loss)
        name = "blur + 2 x 2 stride 2 (default)" if antialias else "plain 2 x 2 stride 2"
        print(
            f"| {name} | {np.mean(d1):.3f} | {np.mean(d2):.3f} | {np.mean(d1) / np.mean(d2):.2f} "
            f"| {np.mean(losses):.3f} |"
        )


def main(argv: list[str] | None = None) -> None:
    global BANDS  # the functions above read it
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--sample", type=int, default=512)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3, help="Meuse models per stem (0: skip)")
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument(
        "--members", type=int, default=1, help="SI-LICNet members (the run default is 3)"
    )
    parser.add_argument(
        "--bands",
        type=int,
        default=6,
        help="input channels (6 bands; 18 with the default context bands, patch.context_m)",
    )
    args = parser.parse_args(argv)
    BANDS = args.bands
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    ramp = np.linspace(-2, 2, args.size, dtype=np.float32)
    image = rng.standard_normal((BANDS, args.size, args.size), dtype=np.float32) + ramp
    model = varied_model(args.members)
    print(f"SI-LICNet with {args.members} member(s).")
    before, after = patch_halo(PATCH_PX)
    side = args.size - PATCH_PX + 1

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    probability_map(model, image[:, :200, :200])  # warm-up
    start, cpu = time.perf_counter(), time.process_time()
    dense = probability_map(model, image, tile_px=args.tile)
    dense_s, dense_cpu = time.perf_counter() - start, time.process_time() - cpu
    rss_dense = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    rows = rng.integers(before, args.size - after, args.sample)
    cols = rng.integers(before, args.size - after, args.sample)
    tensor = torch.from_numpy(image)
    probs = []
    start, cpu = time.perf_counter(), time.process_time()
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
    per_pixel_cpu = (time.process_time() - cpu) / args.sample
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
    print(
        "| method | seconds (all pixels) | pixels / s | pixels / CPU s | speed-up (CPU) "
        "| max abs diff |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| patch by patch (batches of {BATCH}) | {patch_s:.0f} | {1 / per_pixel_s:.0f} "
        f"| {1 / per_pixel_cpu:.0f} | 1x | reference |"
    )
    print(
        f"| dense (this package) | {dense_s:.1f} | {side * side / dense_s:,.0f} "
        f"| {side * side / dense_cpu:,.0f} | {side * side * per_pixel_cpu / dense_cpu:.0f}x "
        f"| {diff:.1e} |"
    )
    if args.seeds:
        phase_table(args.seeds, args.epochs)


if __name__ == "__main__":
    main()
