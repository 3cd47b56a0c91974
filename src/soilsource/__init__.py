"""soilsource: find likely sources of soil heavy-metal pollution from imagery and samples.

The package is laid out as the pipeline it runs, with imports flowing one way (bottom first;
``tests/test_layers.py`` holds the order and enforces it): plumbing (errors, atomic,
progress, runtime, gisout, rundir) -> config -> inputs -> data (labels, target, patches,
dataset) -> sources (apportionment) -> synth -> learn (training, folds, evaluation) ->
models (SI-LICNet, baselines, registry, model files) -> explain -> analysis (hotspots,
zones) -> mapping (probability maps, applicability) -> report -> pipeline (preflight, run,
resume, check, predict) -> cli, a thin layer over the Python API. ``soilsource.synth``
writes the known-truth synthetic city used as demo and benchmark.
"""

import os

# OpenMP worker threads (PyTorch's CPU backend) sleep rather than spin while waiting. On a
# machine shared with other processes, spinning threads take the CPU from the one doing the
# work: 2-thread training ran 3-10x slower than with this set (benchmarks/bench_training.py).
# It only works before torch is imported; a value the user set wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
