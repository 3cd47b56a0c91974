"""Map tile size: seconds per million pixels and memory of one dense-map tile.

``soilsource.mapping.probability.TILE_PX`` decides how much of a region the dense SI-LICNet map
computes at once. For the default 3-member SI-LICNet and patches of 43 px (1280 m at
30 m) and 128 px (1280 m at 10 m), each tile size runs in a fresh process on one thread
(random imagery, the model untrained: the cost does not depend on the weights), so the
peak RSS above the process's own start is the tile's. The maps of all tile sizes are
compared with the 512 px tile's: they must be identical.

Usage: ``python benchmarks/bench_map_tiles.py [--tiles 128 256 512] [--patches 43 128]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np


def one(tile: int, patch: int) -> dict:
    """Map one ``tile`` x ``tile`` output tile (after a warm-up) in this process."""
    import torch

    from soilsource.mapping.probability import probability_map
    from soilsource.models import SILICNet

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = SILICNet(6, patch_px=patch, members=3).eval()
    side = tile + patch - 1
    image = np.random.default_rng(0).normal(size=(6, side, side)).astype(np.float32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    out = probability_map(model, image, tile_px=tile)
    seconds = time.perf_counter() - start
    extra_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    # The same image mapped with 512 px tiles: a tile size must not change the map.
    same = bool(np.array_equal(out, probability_map(model, image, tile_px=512), equal_nan=True))
    return {"s_per_mpx": seconds / (tile * tile / 1e6), "extra_mb": extra_mb, "same": same}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--patches", type=int, nargs="+", default=[43, 128])
    parser.add_argument("--one", type=int, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(one(*args.one)))
        return 0
    print(
        "Default 3-member SI-LICNet, 6 bands, one thread, one tile per fresh process; load "
        f"average {os.getloadavg()[0]:.1f} at the start, 2 CPUs.\n"
    )
    print("| patch px | tile px | s per million px | activations, MB (peak RSS above start) "
          "| map identical to 512 px tiles |\n|---:|---:|---:|---:|---|")  # fmt: skip
    for patch in args.patches:
        for tile in args.tiles:
            proc = subprocess.run(
                [sys.executable, __file__, "--one", str(tile), str(patch)],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            got = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"| {patch} | {tile} | {got['s_per_mpx']:.1f} | {got['extra_mb']:.0f} | "
                  f"{'yes' if got['same'] else '**no**'} |")  # fmt: skip
    print(f"\nLoad average {os.getloadavg()[0]:.1f} at the end.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
