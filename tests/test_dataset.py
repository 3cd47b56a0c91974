"""dataset: patches kept in memory or read on demand give the same dataset and results."""

from __future__ import annotations

import numpy as np

from soilsource.config import load_config
from soilsource.data.dataset import load_dataset
from soilsource.learn.training import TrainSettings
from soilsource.pipeline.runner import MODEL, evaluate
from tinyinputs import write_project

FAST = TrainSettings(max_epochs=2, batch_size=8)


def test_streamed_patches_give_the_cached_results(tmp_path):
    config = load_config(write_project(tmp_path, model={"pretrain": False}))
    cached = load_dataset(config)
    config.compute.patch_cache_mb = 0  # nothing kept: every read goes to the imagery
    streamed = load_dataset(config)
    for a, b in zip(cached, streamed, strict=True):
        assert a.patches.cached and not b.patches.cached
        assert a.table.equals(b.table)
        np.testing.assert_array_equal(a.patches.data, b.patches.data)
        np.testing.assert_array_equal(a.patches.nodata_share, b.patches.nodata_share)
    results = [
        evaluate(d, config, settings=FAST, models=[MODEL, "random_forest"], n_boot=10, device="cpu")
        for d in (cached, streamed)
    ]
    for model in (MODEL, "random_forest"):
        for key, result in results[0][model].items():
            np.testing.assert_array_equal(result.proba, results[1][model][key].proba)
