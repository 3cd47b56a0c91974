"""``soilsource run --resume``: a run killed with SIGKILL continues to the same metrics.json.

The runs are real processes (``python -m soilsource.cli run``) on two regions of the
small synthetic city with 320 m patches, 3 folds and 2 epochs. A run is killed as soon
as fold 1 of SI-LICNet in the second region is checkpointed (training); its resumption
is killed as soon as the first sensitivity GeoTIFF exists (explanation); the second
resumption must end with the metrics.json and predictions.csv of an uninterrupted run
(run meanwhile in another process), byte for byte, without redoing finished work.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import yaml

from soilsource.cli import main
from soilsource.config import load_config
from soilsource.errors import InputError
from soilsource.learn.evaluation import cross_validate
from soilsource.learn.training import Standardized, TorchPatchClassifier, TrainSettings
from soilsource.models import SILICNet
from soilsource.pipeline.resume import CHECKPOINTS, Checkpoints
from soilsource.pipeline.runner import _results_yaml, train_settings
from soilsource.rundir import is_complete, mark, prepare, read_status

REGIONS = ("industrial_town", "river_paddies")
KILL_TIMEOUT_S = 120
FAST = TrainSettings(max_epochs=2, batch_size=16, patience=1)


@pytest.fixture(scope="module")
def config(small_city, tmp_path_factory) -> Path:
    """Two regions of the small city, small patches, 3 folds, 2 epochs."""
    tmp = tmp_path_factory.mktemp("resume")
    samples = pd.read_csv(small_city / "samples.csv")
    samples[samples["region"].isin(REGIONS)].to_csv(tmp / "samples.csv", index=False)
    raw = load_config(small_city / "config.yaml").model_dump(mode="json")
    raw["samples"]["path"] = str(tmp / "samples.csv")
    raw["patch"]["size_m"] = 320.0
    raw["model"]["pretrain_steps"] = 10  # the pretraining runs, briefly
    raw["explain"].update(window_m=80.0, stride_m=40.0)
    raw["train"].update(folds=3, max_epochs=2, patience=1, min_steps=0)
    raw["compute"]["device"] = "cpu"
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def soilsource(*args: str) -> subprocess.Popen:
    """``soilsource ARGS`` as a separate process (so that it can be killed for real)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "soilsource.cli", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=KILL_TIMEOUT_S)
    assert proc.returncode == 0, err[-3000:]


def kill_when(proc: subprocess.Popen, path_exists) -> None:
    """SIGKILL ``proc`` as soon as ``path_exists()`` is true (fails if it ends first)."""
    deadline = time.monotonic() + KILL_TIMEOUT_S
    while not path_exists():
        assert proc.poll() is None, f"the run ended before the kill point: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "kill point not reached"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()


@pytest.mark.slow
def test_killed_in_training_then_in_explanation_resumes_to_the_same_results(config, tmp_path):
    """Kill during training, resume, kill that during explanation, resume to the end."""
    reference = tmp_path / "uninterrupted"
    uninterrupted = soilsource("run", str(config), "--out", str(reference))  # meanwhile
    out = tmp_path / "run"
    folds = out / CHECKPOINTS / "cv" / "silicnet" / REGIONS[1]
    killed = soilsource("run", str(config), "--out", str(out))
    kill_when(killed, lambda: (folds / "fold_1.json").is_file())
    assert killed.returncode == -signal.SIGKILL
    assert read_status(out)["status"] == "running"
    assert not (out / "metrics.json").exists()
    trained = {p: p.stat().st_mtime_ns for p in (out / CHECKPOINTS / "cv").rglob("fold_*.json")}
    assert len(trained) >= 3 + 2  # first region's folds, and folds 0 and 1 of the second

    resumed = soilsource("run", str(config), "--out", str(out), "--resume")
    kill_when(resumed, lambda: any((out / "sensitivity").glob("*.tif")))
    assert not is_complete(out)
    # what was finished before the first kill was neither trained nor written again
    assert {p: p.stat().st_mtime_ns for p in trained} == trained
    assert len(list((out / CHECKPOINTS / "cv").rglob("fold_*.json"))) == 2 * len(REGIONS) * 3
    explained = {p: p.stat().st_mtime_ns for p in (out / "sensitivity").glob("*.tif")}

    finish(soilsource("run", str(config), "--out", str(out), "--resume"))
    finish(uninterrupted)
    assert is_complete(out) and is_complete(reference)
    assert {p: p.stat().st_mtime_ns for p in explained} == explained  # regions not redone
    for name in ("metrics.json", "predictions.csv"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    assert not (out / CHECKPOINTS).exists()  # a complete run keeps no checkpoints
    assert not (reference / CHECKPOINTS).exists()
    # candidates ranked from the effects kept before the kill are the same candidates
    kept, fresh = (
        gpd.read_file(d / "candidates.gpkg", layer="candidates") for d in (out, reference)
    )
    pd.testing.assert_frame_equal(kept.drop(columns="geometry"), fresh.drop(columns="geometry"))
    assert kept.geometry.geom_equals_exact(fresh.geometry, 1e-9).all()
    for name in REGIONS:  # maps from checkpointed final models are the same maps
        for kind in ("sensitivity", "probability"):
            path = Path(kind) / f"{name}.tif"
            with rasterio.open(out / path) as a, rasterio.open(reference / path) as b:
                np.testing.assert_array_equal(a.read(), b.read(), err_msg=str(path))


def test_resume_refuses_another_configuration(config, tmp_path, capsys):
    out = prepare(tmp_path / "run")  # a run killed after it began its checkpoints
    Checkpoints(out, train_settings(load_config(config))).start(load_config(config).to_yaml())
    other = tmp_path / "other.yaml"
    raw = yaml.safe_load(config.read_text())
    raw["train"]["seed"] = 7
    other.write_text(yaml.safe_dump(raw))
    assert main(["run", str(other), "--out", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (
        f"soilsource: error: --resume: {out}: the configuration (first difference: "
        "train.seed) differs from the killed run's; run it with the same configuration, "
        "or without --resume to start again"
    )


def test_where_a_run_computes_is_not_part_of_its_fingerprint(config):
    """A run killed on one Dask cluster may resume on another, or locally: same results."""
    local = load_config(config)
    cluster = load_config(config)
    cluster.compute.scheduler = "tcp://10.0.0.1:8786"
    assert _results_yaml(cluster) == _results_yaml(local)
    assert cluster.compute.scheduler == "tcp://10.0.0.1:8786"  # the run's own config is kept
    local.train.seed += 1
    assert _results_yaml(cluster) != _results_yaml(local)


def test_resume_needs_an_unfinished_run(config, tmp_path, capsys):
    assert main(["run", str(config), "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "holds no soilsource run to resume" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
    complete = prepare(tmp_path / "complete")
    mark(complete, "complete")
    assert main(["run", str(config), "--out", str(complete), "--resume"]) == 2
    assert "holds a complete run; nothing to resume" in capsys.readouterr().err
    assert main(["run", str(config), "--out", str(complete), "--resume", "--force"]) == 2
    assert "--resume: cannot be combined with --force" in capsys.readouterr().err
    assert is_complete(complete)


# --- the fold store in-process: what is checkpointed is not trained again -----------------


def test_checkpointed_folds_and_final_model_are_not_trained_again(tmp_path):
    rng = np.random.default_rng(0)
    patches = rng.normal(size=(40, 2, 8, 8)).astype(np.float32)
    labels = np.tile([0, 1], 20)
    patches[labels == 1, 0] += 1.0
    xy = rng.uniform(0, 1000, size=(40, 2))
    store = Checkpoints(tmp_path, FAST, "cpu").folds("silicnet", "../../escape")
    assert store.folder.is_relative_to(tmp_path / CHECKPOINTS)

    def net():
        return Standardized(TorchPatchClassifier(SILICNet(2, patch_px=8), settings=FAST))

    options = {"folds": 3, "block_m": 250.0, "seed": 3, "n_boot": 50, "checkpoint": store}
    first = cross_validate(net, patches, labels, xy, **options)
    assert sorted(p.name for p in store.folder.iterdir()) == [
        "final.pt", "fold_0.json", "fold_1.json", "fold_2.json"
    ]  # fmt: skip

    def untrainable():
        raise AssertionError("a checkpointed fold was trained again")

    again = cross_validate(untrainable, patches, labels, xy, **options)
    np.testing.assert_array_equal(again.proba, first.proba)
    assert again.metrics() == first.metrics()
    x = patches[:5]
    np.testing.assert_array_equal(again.final.predict_proba(x), first.final.predict_proba(x))


def test_a_fold_checkpoint_of_other_samples_is_refused(tmp_path):
    store = Checkpoints(tmp_path).folds("random_forest", "r1")
    store.save_fold(0, np.array([1, 2, 3]), np.array([0.1, np.nan, 0.3]), {"fold": 0})
    proba, info = store.load_fold(0, np.array([1, 2, 3]))
    assert np.isnan(proba[1]) and proba[2] == 0.3 and info == {"fold": 0}
    with pytest.raises(InputError, match="this fold held other samples"):
        store.load_fold(0, np.array([1, 2, 4]))


def test_object_effects_are_kept_and_loaded_exactly(tmp_path):
    """A raster's per-sample object effects come back as they were kept (no pickle)."""
    from scipy import sparse

    store = Checkpoints(tmp_path)
    effects = sparse.random(30, 200, density=0.05, format="csr", random_state=0)
    assert store.load_effects("region_a") is None
    store.save_effects("region_a", effects)
    back = store.load_effects("region_a")
    assert back is not None and (back != effects).nnz == 0 and back.dtype == effects.dtype
    assert [p.name for p in (tmp_path / CHECKPOINTS / "explain").iterdir()] == ["region_a.npz"]
