"""Safety: files from elsewhere execute nothing, and no input can make a run write elsewhere.

- a pickle (raw, or inside a torch zip) in place of a model file or a checkpoint is
  refused, and the code it carries does not run;
- a YAML configuration with ``!!python/...`` tags is refused, and runs nothing;
- region names from the samples table cannot make outputs leave the run directory.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from soilsource.cli import main
from soilsource.config import load_config
from soilsource.errors import InputError
from soilsource.models.modelio import load_model
from soilsource.pipeline.resume import Checkpoints
from soilsource.rundir import safe_stem

BASE = Path(__file__).resolve().parent / "badinputs" / "base"


class Payload:
    """Unpickling this writes ``marker``: the proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "code ran"))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "pwned.txt"


def crafted_files(folder: Path, marker: Path) -> dict[str, Path]:
    """Model-looking files that run code when unpickled."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "raw.pt"
    raw.write_bytes(pickle.dumps(Payload(marker)))
    zipped = folder / "zipped.pt"  # torch's own zip container, with a pickle inside
    torch.save({"format": "soilsource-model", "header": Payload(marker)}, zipped)
    objects = folder / "objects.npz"
    np.savez(objects, header=np.array([Payload(marker)], dtype=object))
    return {"raw": raw, "zipped": zipped, "objects": objects}


def test_the_payload_really_runs_code_when_unpickled(tmp_path, marker):
    """The oracle: plain pickle does execute it (so the refusals below mean something)."""
    pickle.loads(crafted_files(tmp_path / "m", marker)["raw"].read_bytes())
    assert marker.read_text() == "code ran"


@pytest.mark.parametrize("kind", ["raw", "zipped", "objects"])
def test_crafted_pickle_in_place_of_a_model_file_is_refused(tmp_path, marker, kind):
    path = crafted_files(tmp_path / "models", marker)[kind]
    model = tmp_path / "models" / "r1" / f"silicnet{path.suffix}"
    model.parent.mkdir()
    shutil.move(path, model)
    with pytest.raises(InputError) as info:
        load_model(model)
    assert "not a soilsource model file" in str(info.value) or "header" in str(info.value)
    assert str(info.value).startswith(str(model))
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["zipped", "objects"])
def test_crafted_pickle_among_the_checkpoints_is_refused(tmp_path, marker, kind):
    """A resumed run loads final models from .checkpoints/: a planted pickle runs nothing."""
    store = Checkpoints(tmp_path / "run").folds("silicnet", "r1")
    path = crafted_files(tmp_path / "crafted", marker)[kind]
    store.folder.mkdir(parents=True)
    shutil.move(path, store.folder / f"final{'.pt' if kind == 'zipped' else '.npz'}")
    with pytest.raises(InputError):
        store.load_final()
    assert not marker.exists()


def test_yaml_python_tags_are_refused_and_run_nothing(tmp_path, marker, capsys):
    config = tmp_path / "config.yaml"
    config.write_text(
        f"samples: !!python/object/apply:pathlib.Path.write_text ['{marker}', 'code ran']\n"
        "imagery: {path: imagery.tif}\nlabel: {rule: threshold, threshold: 1}\n"
    )
    with pytest.raises(InputError, match="YAML syntax error: could not determine a constructor"):
        load_config(config)
    assert main(["check", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"soilsource: error: {config}: line 1: YAML syntax error")
    assert err.count("\n") == 1
    assert not marker.exists()
    with pytest.raises(yaml.constructor.ConstructorError):  # unsafe loading would run it
        yaml.safe_load(config.read_text())


@pytest.mark.parametrize(
    ("name", "stem"),
    [
        ("../../escaped", "_.._escaped"),
        ("/etc/passwd", "_etc_passwd"),
        ("..", "_"),
        (".hidden", "hidden"),
        ("a\\b:c", "a_b_c"),
        ("<script>alert(1)</script>", "_script_alert(1)__script_"),
        ("Dongguan North", "Dongguan North"),
        ("东莞", "东莞"),
    ],
)
def test_safe_stem_keeps_names_inside_a_directory(name, stem, tmp_path):
    assert safe_stem(name) == stem
    assert (tmp_path / f"{safe_stem(name)}.tif").resolve().parent == tmp_path.resolve()


def test_region_names_cannot_make_a_run_write_outside_its_directory(tmp_path):
    """A whole run whose region names are '..' and HTML: every output stays inside --out.

    (A '/' in a region name is refused by the samples reader: see the corpus.)
    """
    project = tmp_path / "project"
    shutil.copytree(BASE, project)
    table = pd.read_csv(project / "samples.csv")
    table["region"] = table["region"].map({"r1": "..", "r2": "<img src=x onerror=alert(1)>"})
    table.to_csv(project / "samples.csv", index=False)
    raw = yaml.safe_load((project / "config.yaml").read_text())
    raw["model"] = {"baselines": []}
    raw["train"].update(max_epochs=1, patience=1, min_steps=0)
    (project / "config.yaml").write_text(yaml.safe_dump(raw))
    before = set(tmp_path.rglob("*"))

    out = tmp_path / "deep" / "er" / "out"
    assert main(["run", str(project / "config.yaml"), "--out", str(out), "--device", "cpu"]) == 0
    new = set(tmp_path.rglob("*")) - before
    assert new, "the run wrote nothing"
    assert all(p == out or out in p.parents or p in out.parents for p in new), sorted(
        str(p) for p in new if out not in p.parents
    )
    assert (out / "sensitivity" / "_.tif").is_file()
    assert (out / "sensitivity" / "_img src=x onerror=alert(1)_.tif").is_file()
    assert (out / "models" / "_" / "silicnet.pt").is_file()
    assert not (out / "silicnet.pt").exists()  # models/../silicnet.pt
