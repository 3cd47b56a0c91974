"""The one model registry: every name builds an estimator with the one protocol."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError
from torch import nn

from soilsource.config import Baseline
from soilsource.learn.training import Standardized, TorchPatchClassifier, TrainSettings
from soilsource.models import SILICNet, WindowStatsForest
from soilsource.models.baselines import mobilenet_v3_small
from soilsource.models.modelio import (
    ARCHITECTURES,
    load_estimator,
    model_state,
    save_estimator,
)
from soilsource.models.registry import (
    BASELINES,
    COLOURS,
    LABELS,
    METHOD,
    REGISTRY,
    estimator,
    network_spec,
    spec,
)

SRC = Path(__file__).resolve().parents[1] / "src" / "soilsource"
FAST = TrainSettings(max_epochs=2, batch_size=16, patience=1)


def test_the_configuration_names_are_the_registry_baselines():
    assert set(BASELINES) == set(get_args(Baseline))
    assert METHOD not in BASELINES and set(REGISTRY) == {METHOD, *BASELINES}
    assert set(LABELS) == set(COLOURS) == set(REGISTRY)
    assert len(set(COLOURS.values())) == len(COLOURS)  # one colour per model


def test_model_files_rebuild_exactly_the_registry_networks():
    assert set(ARCHITECTURES) == {n for n, e in REGISTRY.items() if e.network is not None}


def test_an_unknown_name_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'xgboost'; known: silicnet, random"):
        spec("xgboost")
    with pytest.raises(ValueError, match="unknown model"):
        estimator("xgboost", 3, 16)


def _task(n: int = 24, bands: int = 3, px: int = 16, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, bands, px, px)).astype(np.float32)
    labels = np.arange(n) % 2
    x[labels == 1, :, 6:10, 6:10] += 2.0
    values = np.where(labels == 1, 0.6, 0.15) * rng.lognormal(0, 0.2, n)
    return x, labels, values


@pytest.mark.parametrize("name", list(REGISTRY))
@pytest.mark.parametrize("target", ["label", "value"])
def test_every_model_has_the_one_protocol(name, target):
    x, labels, values = _task()
    model = estimator(name, 3, 16, target=target, settings=FAST, device="cpu")
    with pytest.raises(NotFittedError):
        model.predict_value(x) if target == "value" else model.predict_proba(x)
    torch.manual_seed(0)
    fitted = model.fit(x, values if target == "value" else labels, seed=0)
    assert fitted is model
    limit = np.full(len(x), 0.3) if target == "value" else None
    proba = model.predict_proba(x, limit)
    assert proba.shape == (len(x),) and np.all((proba >= 0) & (proba <= 1))
    value = model.predict_value(x)
    if target == "label":
        assert value is None
    else:
        assert value.shape == (len(x),) and np.all(value > 0)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_fitted_model_is_saved_and_loaded_as_it_predicts(tmp_path, name):
    x, labels, _ = _task()
    torch.manual_seed(0)
    model = estimator(name, 3, 16, settings=FAST, device="cpu").fit(x, labels, seed=0)
    path = save_estimator(tmp_path / "final", model)
    assert path is not None and path.suffix == (".npz" if name == "random_forest" else ".pt")
    again = load_estimator(tmp_path / "final", settings=FAST, device="cpu")
    np.testing.assert_allclose(again.predict_proba(x), model.predict_proba(x), rtol=1e-6)
    assert load_estimator(tmp_path / "nothing") is None
    assert save_estimator(tmp_path / "other", object()) is None


def test_networks_are_known_by_the_registry_not_by_their_class_name():
    assert network_spec(SILICNet(3, patch_px=16)).name == METHOD
    assert network_spec(mobilenet_v3_small(3)).name == "mobilenet_v3_small"
    assert network_spec(WindowStatsForest()) is None
    assert network_spec(nn.Conv2d(3, 1, 3)) is None
    assert REGISTRY[METHOD].incremental_occlusion and REGISTRY[METHOD].dense_maps
    assert not any(e.incremental_occlusion or e.dense_maps for e in map(spec, BASELINES))
    assert model_state(mobilenet_v3_small(3)).architecture == "mobilenet_v3_small"


def test_estimator_wraps_networks_in_the_fitting_loop():
    model = estimator("resnet18", 3, 16, settings=FAST, device="cpu")
    assert isinstance(model, Standardized) and isinstance(model.inner, TorchPatchClassifier)
    built = SILICNet(3, patch_px=16, members=2)
    assert estimator(METHOD, 3, 16, build=lambda: built).inner.module is built
    assert isinstance(estimator("random_forest", 3, 16), WindowStatsForest)


MODEL_CLASSES = re.compile(r"\b(SILICNet|WindowStatsForest|TreeEnsemble|TorchvisionLogit)\b")


def test_no_isinstance_on_model_kinds_outside_the_registry_and_model_files():
    """Callers ask the registry what a model can do (``network_spec``), not its class."""
    allowed = {"models/registry.py", "models/modelio.py", "models/baselines.py"}
    found = []
    for path in sorted(SRC.rglob("*.py")):
        where = str(path.relative_to(SRC))
        if where in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "isinstance"
                and MODEL_CLASSES.search(ast.unparse(node.args[1]))
            ):
                found.append(f"{where}:{node.lineno}: {ast.unparse(node)}")
    assert not found, "\n".join(found)
