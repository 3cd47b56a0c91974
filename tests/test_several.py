"""Several metals in one run: one complete single-metal layout per metal, and an overview.

A small synthetic city region with Cd as measured, Pb that follows Cd (so it has both
classes) and Zn below its threshold everywhere (one class only: reported with the
reason, never dropped).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from soilsource.cli import main
from soilsource.config import load_config
from soilsource.learn import training
from soilsource.learn.training import TrainSettings, available_cpus, share_cpus
from soilsource.pipeline.runner import run, runs_at_once
from soilsource.rundir import is_complete

FAST = TrainSettings(max_epochs=1, batch_size=16, patience=1)
REGION = "industrial_town"


def _metals_config(city: Path, folder: Path, **extra) -> Path:
    """One region of the city with Cd, Pb and Zn columns and small, quick settings."""
    samples = pd.read_csv(city / "samples.csv")
    samples = samples[samples["region"] == REGION].copy()
    rng = np.random.default_rng(1)
    samples["pb_mgkg"] = (samples["cd_mgkg"] * 150 * rng.lognormal(0, 0.1, len(samples))).round(2)
    samples["zn_mgkg"] = rng.uniform(20, 40, len(samples)).round(1)
    samples.to_csv(folder / "samples.csv", index=False)
    raw = yaml.safe_load((city / "config.yaml").read_text())
    raw["metal"] = ["Cd", "pb", "Zn"]
    raw["samples"].update(path=str(folder / "samples.csv"),
                          value={"Cd": "cd_mgkg", "Pb": "pb_mgkg", "Zn": "zn_mgkg"})  # fmt: skip
    del raw["samples"]["ph"], raw["samples"]["paddy"]
    raw["imagery"]["path"] = str(city / "imagery" / "{region}.tif")
    raw["landuse"] = {"path": str(city / "landuse" / "{region}.tif"),
                      "classes": str(city / "landuse" / "classes.csv")}  # fmt: skip
    threshold = {"Cd": float(samples["cd_mgkg"].median()),
                 "Pb": float(samples["pb_mgkg"].median()), "Zn": 200.0}  # fmt: skip
    raw["label"] = {"rule": "threshold", "threshold": threshold}
    raw["patch"] = {"size_m": 320.0}
    raw["explain"] = {"window_m": 80.0, "stride_m": 40.0, "max_samples": 20}
    raw["model"] = {"baselines": [], "pretrain": False, "members": 1}
    raw["train"] = {"folds": 2, "seed": 0, "min_steps": 0, "max_epochs": 1}
    raw.update(extra)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def several_run(small_city, tmp_path_factory):
    folder = tmp_path_factory.mktemp("several")
    config = _metals_config(small_city, folder)
    return config, run(config, folder / "out", settings=FAST, device="cpu")


def test_config_names_each_metal_and_its_column(small_city, tmp_path):
    config = load_config(_metals_config(small_city, tmp_path))
    assert config.metals == ["Cd", "Pb", "Zn"] and config.several
    pb = config.for_metal("Pb")
    assert (pb.metal, pb.samples.value, pb.label.threshold) == (
        "Pb", "pb_mgkg", config.label.threshold["Pb"]
    )  # fmt: skip
    assert not pb.several and pb.sources is None


@pytest.mark.slow
def test_each_metal_gets_a_complete_single_metal_layout(several_run):
    _, result = several_run
    out = result.out
    assert is_complete(out)
    for metal in ("Cd", "Pb", "Zn"):
        assert is_complete(out / metal), metal
        metrics = json.loads((out / metal / "metrics.json").read_text())
        assert metrics["metal"] == metal
        for name in ("predictions.csv", "report.html", "config.yaml"):
            assert (out / metal / name).is_file(), (metal, name)
    top = json.loads((out / "metrics.json").read_text())
    assert top["metals"] == ["Cd", "Pb", "Zn"]
    assert set(top["runs"]) == {"Cd", "Pb", "Zn"}
    zn = top["runs"]["Zn"]["regions"][REGION]
    assert zn["auc"] is None and zn["auc_null_reason"].startswith("one class only"), zn
    assert top["runs"]["Pb"]["regions"][REGION]["auc"] is not None
    html = (out / "report.html").read_text()
    assert "one class only" in html and 'href="Pb/report.html"' in html


@pytest.mark.slow
def test_run_command_prints_every_metal(several_run, capsys):
    from soilsource.cli import _print_metrics

    _, result = several_run
    _print_metrics(result.metrics)  # what `soilsource run` prints at the end
    printed = capsys.readouterr().out
    assert all(metal in printed for metal in ("Cd", "Pb", "Zn")) and "one class only" in printed


@pytest.mark.slow
def test_resume_keeps_the_complete_metals(several_run, tmp_path):
    config, result = several_run
    import shutil

    copy = tmp_path / "out"
    shutil.copytree(result.out, copy)
    (copy / "run.json").write_text(json.dumps({"status": "running"}))
    (copy / "Zn" / "run.json").write_text(json.dumps({"status": "running"}))
    before = (copy / "Cd" / "metrics.json").read_bytes()
    again = run(config, copy, settings=FAST, device="cpu", resume=True)
    assert again.runs["Cd"] is None and again.runs["Pb"] is None  # complete: kept
    assert again.runs["Zn"] is not None
    assert (copy / "Cd" / "metrics.json").read_bytes() == before
    assert is_complete(copy)


def test_bad_several_metal_settings_are_one_line_before_anything_is_written(
    small_city, tmp_path, capsys
):
    config = _metals_config(small_city, tmp_path)
    raw = yaml.safe_load(config.read_text())
    raw["samples"]["value"] = {"Cd": "cd_mgkg", "Pb": "no_such_column", "Zn": "zn_mgkg"}
    config.write_text(yaml.safe_dump(raw))
    out = tmp_path / "out"
    assert main(["run", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no_such_column" in err, err
    assert not out.exists()


def _sources_config(city: Path, folder: Path) -> Path:
    """One region, four of the city's metals, PMF with 2 factors, each learned from imagery."""
    path = _metals_config(city, folder)
    samples = pd.read_csv(city / "samples.csv")
    samples = samples[samples["region"] == REGION]
    samples.to_csv(folder / "samples.csv", index=False)  # the city's own metal columns
    raw = yaml.safe_load(path.read_text())
    metals = ["Cd", "Pb", "Zn", "Cu"]
    raw["metal"] = metals
    raw["samples"]["value"] = {m: f"{m.lower()}_mgkg" for m in metals}
    raw["label"] = {"rule": "quantile", "q": 0.75}
    raw["sources"] = {"factors": 2, "starts": 2, "bootstrap": 5,
                      "detection_limit": {"Cd": 0.01}}  # fmt: skip
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.slow
def test_sources_are_apportioned_and_each_factor_learned_from_the_imagery(small_city, tmp_path):
    config = _sources_config(small_city, tmp_path)
    result = run(config, tmp_path / "out", settings=FAST, device="cpu")
    out = result.out
    profiles = pd.read_csv(out / "sources" / "profiles.csv")
    assert set(profiles["factor"]) == {1, 2}
    assert set(profiles["metal"]) <= {"Cd", "Pb", "Zn", "Cu"}
    # each metal's modelled total is split among the factors
    np.testing.assert_allclose(profiles.groupby("metal")["share"].sum(), 1.0, atol=1e-6)
    contributions = pd.read_csv(out / "sources" / "contributions.csv")
    factor_samples = pd.read_csv(out / "sources" / "samples.csv")
    assert len(contributions) == 2 * len(factor_samples)
    for k in (1, 2):
        folder = out / "sources" / f"factor_{k}"
        assert is_complete(folder)
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["title"].startswith(f"factor {k} (") and metrics["title"].endswith("load")
        assert (folder / "concentration" / f"{REGION}.tif").is_file()
        # the samples' CRS by its code, as a user would write it (its WKT filled the report)
        factor_yaml = yaml.safe_load((folder / "config.yaml").read_text())
        assert factor_yaml["samples"]["crs"] == "EPSG:4326"
        # the factor's load: contribution x its summed profile, floored above zero
        per_unit = profiles[profiles["factor"] == k]["mg_kg_per_unit"].sum()
        mine = contributions[contributions["factor"] == k].set_index("sample_id")
        load = mine["contribution"].reindex(factor_samples["sample_id"].astype(str)) * per_unit
        ok = load.to_numpy() > 0.05 * np.median(load)
        np.testing.assert_allclose(factor_samples[f"factor_{k}"][ok], load[ok], rtol=1e-6)
    top = json.loads((out / "metrics.json").read_text())
    assert top["sources"]["factors"] == 2
    assert {"sources/factor_1", "sources/factor_2"} <= set(top["runs"])
    html = (out / "report.html").read_text()
    assert "source profiles as stacked bars" in html and "factor 1 (" in html
    assert html.count('class="map') >= 2  # each factor's map


def test_check_prints_every_metal_and_validates_the_sources(small_city, tmp_path):
    from soilsource.pipeline.check import check_all

    summaries = check_all(_sources_config(small_city, tmp_path))
    assert [s.metal for s in summaries] == ["Cd", "Pb", "Zn", "Cu"]
    raw = yaml.safe_load((tmp_path / "config.yaml").read_text())
    raw["sources"]["factors"] = 4  # as many as the metals: refused before any training
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    assert main(["check", str(tmp_path / "config.yaml")]) == 2
    assert main(["run", str(tmp_path / "config.yaml"), "--out", str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_runs_at_once_follows_the_cores_the_memory_and_the_device(
    small_city, tmp_path, monkeypatch
):
    config = load_config(_metals_config(small_city, tmp_path))
    monkeypatch.setattr(training, "_CPU_SHARE", 4)
    monkeypatch.setattr(training.os, "sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setenv("SOILSOURCE_FREE_MEMORY", str(64 * 2**30))
    assert runs_at_once(config, 5, "cpu") == 4  # one core each at least
    assert runs_at_once(config, 3, "cpu") == 3 and runs_at_once(config, 1, "cpu") == 1
    monkeypatch.setenv("SOILSOURCE_FREE_MEMORY", str(5 * 2**30))  # 2 GiB + a 1 GiB cache each
    config.compute.patch_cache_mb = 1024
    assert runs_at_once(config, 5, "cpu") == 1
    config.compute.patch_cache_mb = 0
    assert runs_at_once(config, 5, "cpu") == 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine
    assert runs_at_once(config, 5, "cuda") == 1  # the runs would queue for the GPU
    assert runs_at_once(config, 5, "auto") == 1 and runs_at_once(config, 5, "cpu") == 2
    config.compute.scheduler = "tcp://localhost:8786"
    assert runs_at_once(config, 5, "cpu") == 1  # the cluster does the heavy work
    config.compute.runs_at_once = 3
    assert runs_at_once(config, 5, "cuda") == 3 and runs_at_once(config, 2, "cpu") == 2


@pytest.mark.slow
def test_runs_side_by_side_give_the_numbers_of_runs_one_after_the_other(
    small_city, tmp_path, monkeypatch
):
    """Each run in its own process gives exactly what the same runs give in this process
    with the same share of the cores: a run depends on its seed and cores, not on timing."""
    outs, threads = {}, torch.get_num_threads()
    monkeypatch.setattr(training, "_CPU_SHARE", None)  # restored after the test
    try:
        for lanes in (2, 1):
            folder = tmp_path / str(lanes)
            folder.mkdir()
            config = _metals_config(small_city, folder, compute={"runs_at_once": lanes})
            if lanes == 1:  # here, with the share each of the two processes had
                share_cpus(max(1, available_cpus() // 2))
            outs[lanes] = run(config, folder / "out", settings=FAST, device="cpu").out
    finally:
        torch.set_num_threads(threads)
    for metal in ("Cd", "Pb"):
        side, alone = (pd.read_csv(outs[k] / metal / "predictions.csv") for k in (2, 1))
        pd.testing.assert_frame_equal(side, alone)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "parent killed"])
def test_stopping_a_run_side_by_side_stops_every_run(small_city, tmp_path, how):
    """Ctrl-C (SIGINT to the process group) ends a several-metal run at once, exit 130, as a
    run in one process ends, and ``--resume`` finishes it; a killed parent takes its runs
    with it (none goes on writing after the directory's lock is gone)."""
    config = _metals_config(small_city, tmp_path, compute={"runs_at_once": 2})
    out = tmp_path / "out"
    command = [sys.executable, "-m", "soilsource.cli", "run", str(config), "--out", str(out)]
    # Ctrl-C as in a terminal: a test run in the background (`make test &`) inherits SIGINT
    # ignored, and an ignored SIGINT stays ignored in the child, as it should.
    proc = subprocess.Popen(
        command,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    while not (out / "Cd" / "run.json").exists():  # a run has started in its process
        assert proc.poll() is None and time.monotonic() < deadline, "ended before it could stop"
        time.sleep(0.2)
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err[-2000:]
        assert "Traceback" not in err and "interrupted" in err.splitlines()[-1]
    else:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    for _ in range(100):  # the runs' processes end with it
        if not _group_alive(proc.pid):
            break
        time.sleep(0.1)
    assert not _group_alive(proc.pid)
    assert not is_complete(out)
    assert main(["run", str(config), "--out", str(out), "--resume"]) == 0
    assert is_complete(out) and all(is_complete(out / m) for m in ("Cd", "Pb", "Zn"))
