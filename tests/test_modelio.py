"""Tests of soilsource.models.modelio: round trips, and files that must be refused."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from soilsource.errors import InputError
from soilsource.learn.training import TorchPatchClassifier, predict_proba
from soilsource.models import SILICNet
from soilsource.models.baselines import WindowStatsForest, mobilenet_v3_small
from soilsource.models.modelio import load_model, model_state, read_header, save_model

META = {"bands": ["red", "nir"], "mean": [0.1, 0.2], "std": [1.0, 2.0], "patch_px": 16}


class Evil:
    """Unpickling this creates a file: proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture(scope="module")
def patches() -> np.ndarray:
    return np.random.default_rng(0).normal(size=(12, 2, 16, 16)).astype("float32")


@pytest.fixture(scope="module")
def forest(patches) -> WindowStatsForest:
    x = np.concatenate([patches] * 3)
    x[::5, 0, 6:10, 6:10] = np.nan  # some missing pixels: trees learn where NaN goes
    y = (np.nanmean(x[:, 1], axis=(1, 2)) > 0).astype(int)
    return WindowStatsForest(n_estimators=25).fit(x, y, seed=0)


def test_torch_round_trip_is_exact(tmp_path, patches):
    torch.manual_seed(0)
    net = mobilenet_v3_small(2)
    net.eval()
    before = predict_proba(net, patches, "cpu")
    path = save_model(
        tmp_path / "m.pt",
        TorchPatchClassifier(net),
        architecture="mobilenet_v3_small",
        init_kwargs={"in_channels": 2},
        metadata=META,
    )
    saved = load_model(path)
    assert saved.architecture == "mobilenet_v3_small"
    assert saved.init_kwargs == {"in_channels": 2}
    assert saved.metadata == META
    assert not saved.model.training
    assert np.array_equal(predict_proba(saved.model, patches, "cpu"), before)
    assert read_header(path)["metadata"]["bands"] == ["red", "nir"]
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary left


def test_silicnet_round_trip_describes_itself(tmp_path, patches):
    from soilsource.models import SILICNet

    torch.manual_seed(0)
    net = SILICNet(2, patch_px=16, width=8).eval()
    path = save_model(tmp_path / "silicnet.pt", net, metadata=META)
    saved = load_model(path)
    assert saved.architecture == "silicnet"
    assert saved.init_kwargs == net.config
    assert np.array_equal(
        predict_proba(saved.model, patches, "cpu"), predict_proba(net, patches, "cpu")
    )


def test_forest_round_trip_gives_identical_probabilities(tmp_path, forest, patches):
    x = patches.copy()
    x[:4, 0, 5:11, 5:11] = np.nan
    path = save_model(tmp_path / "rf.npz", forest, metadata=META)
    saved = load_model(path)
    assert saved.architecture == "random_forest"
    assert saved.metadata == META
    assert np.array_equal(saved.model.predict_proba(x), forest.predict_proba(x))
    header = read_header(path)
    assert header["init_kwargs"]["scales"] == [1, 3, 9, 16]


def test_a_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps(Evil(marker)))
    with pytest.raises(InputError, match="pickle"):
        load_model(path)
    assert not marker.exists()


def test_a_torch_file_with_code_in_it_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    torch.save({"format": "soilsource-model", "header": "{}", "state_dict": Evil(marker)}, path)
    with pytest.raises(InputError, match="refused"):
        load_model(path)
    assert not marker.exists()


def test_an_npz_with_pickled_objects_is_refused(tmp_path, forest):
    path = save_model(tmp_path / "rf.npz", forest)
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays["value"] = np.array([Evil(tmp_path / "pwned")], dtype=object)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    with pytest.raises(InputError, match="refused"):
        load_model(bad)
    assert not (tmp_path / "pwned").exists()


def test_corrupt_trees_are_refused(tmp_path, forest):
    path = save_model(tmp_path / "rf.npz", forest)
    with np.load(path) as npz:
        arrays = {k: npz[k] for k in npz.files}
    left = arrays["children_left"].copy()
    inner = np.flatnonzero(left != -1)
    left[inner[1]] = 0  # points back to the root: would loop forever
    bad = tmp_path / "loop.npz"
    np.savez(bad, **{**arrays, "children_left": left})
    with pytest.raises(InputError, match="trees: child indices"):
        load_model(bad)


def test_other_bad_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_model(tmp_path / "missing.pt")
    other_zip = tmp_path / "x.zip"
    with zipfile.ZipFile(other_zip, "w") as z:
        z.writestr("readme.txt", "hello")
    with pytest.raises(InputError, match="not a soilsource model"):
        load_model(other_zip)
    plain = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(2)}, plain)  # plain weights, no header
    with pytest.raises(InputError, match="not a soilsource model"):
        load_model(plain)


def _rewrite_torch_header(path: Path, **changes) -> None:
    payload = torch.load(path, weights_only=True)
    header = json.loads(payload["header"])
    header.update(changes)
    payload["header"] = json.dumps(header)
    torch.save(payload, path)


def test_unknown_architecture_and_mismatched_weights_are_input_errors(tmp_path):
    net = mobilenet_v3_small(2)
    path = save_model(
        tmp_path / "m.pt", net, architecture="mobilenet_v3_small", init_kwargs={"in_channels": 2}
    )
    _rewrite_torch_header(path, architecture="os.system")
    with pytest.raises(InputError, match=r"unknown 'os\.system'"):
        load_model(path)
    _rewrite_torch_header(path, architecture="mobilenet_v3_small", init_kwargs={"in_channels": 5})
    with pytest.raises(InputError, match="weights do not fit mobilenet_v3_small"):
        load_model(path)
    _rewrite_torch_header(path, init_kwargs={"in_channels": 2}, version=99)
    with pytest.raises(InputError, match="version 99"):
        load_model(path)


def test_save_rejects_what_it_cannot_write(tmp_path, forest):
    with pytest.raises(ValueError, match="architecture"):
        save_model(tmp_path / "m.pt", mobilenet_v3_small(2), architecture="mystery")
    with pytest.raises(ValueError, match="plain JSON"):
        save_model(tmp_path / "rf.npz", forest, metadata={"when": object()})
    with pytest.raises(TypeError):
        save_model(tmp_path / "x", "not a model")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="architecture"):
        save_model(tmp_path / "m.pt", torch.nn.Linear(2, 1))  # not a known network
    assert not list(tmp_path.iterdir())


def test_model_state_rebuilds_the_same_network_and_refuses_other_modules():
    model = SILICNet(2, patch_px=16).eval()
    state = model_state(model)
    assert all(isinstance(v, np.ndarray) for v in state.weights.values())
    x = torch.randn(3, 2, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), state.build()(x))
    with pytest.raises(TypeError, match="plain state"):
        model_state(nn.Conv2d(2, 1, 3))
