"""Trained models saved in files that load without executing code.

Pickle (and joblib, and ``torch.load`` without ``weights_only``) runs code named in the
file while loading it, so a model file from elsewhere could do anything. Here:

- **torch models** (SI-LICNet, the torchvision baselines): one ``.pt`` file written by
  ``torch.save`` holding only tensors and strings, ``{"format", "header", "state_dict"}``,
  loaded with ``torch.load(weights_only=True)``, which refuses anything else. The
  architecture is rebuilt from a fixed list (:data:`ARCHITECTURES`), never from a
  class path in the file.
- **the random forest**: one ``.npz`` of the trees' node arrays
  (:class:`~soilsource.models.baselines.TreeEnsemble`), loaded with
  ``np.load(allow_pickle=False)``; it predicts exactly like the fitted forest.

Both carry a JSON header: format and version, architecture, init kwargs, and the
caller's metadata (band normalisation statistics, ``patch_px``, the label rule, ...).
A file that is not one of these (a pickle, say) is refused with an
:class:`~soilsource.errors.InputError`.

>>> import tempfile
>>> from pathlib import Path
>>> from soilsource.models.baselines import resnet18
>>> path = Path(tempfile.mkdtemp()) / "resnet18.pt"
>>> _ = save_model(path, resnet18(4), metadata={"patch_px": 32})
>>> saved = load_model(path)
>>> saved.architecture, saved.init_kwargs, saved.metadata["patch_px"]
('resnet18', {'in_channels': 4}, 32)
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import NotFittedError
from torch import nn

from soilsource import __version__
from soilsource.atomic import atomic_path
from soilsource.data.patches import BandStats
from soilsource.data.target import LogNormalLink
from soilsource.errors import InputError
from soilsource.learn.training import (
    PatchEstimator,
    Standardized,
    TorchPatchClassifier,
    TrainSettings,
)
from soilsource.models.baselines import TreeEnsemble, WindowStatsForest
from soilsource.models.registry import REGISTRY, network_spec

__all__ = [
    "ARCHITECTURES",
    "FORMAT",
    "ModelState",
    "SavedModel",
    "load_estimator",
    "load_model",
    "model_state",
    "read_header",
    "save_estimator",
    "save_model",
]

FORMAT = "soilsource-model"
VERSION = 1
FOREST = "random_forest"


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    name: entry.network for name, entry in REGISTRY.items() if entry.network is not None
}
"""The torch architectures a model file may name, by name; nothing else is built."""


@dataclass
class SavedModel:
    """A loaded model (torch module in eval mode on the CPU, or a predict-only forest)."""

    model: nn.Module | WindowStatsForest
    architecture: str
    init_kwargs: dict[str, Any]
    metadata: dict[str, Any]
    link: LogNormalLink | None = None
    """How the output becomes a concentration and a probability (models of the value)."""


def save_model(
    path: str | os.PathLike[str],
    model: nn.Module | TorchPatchClassifier | WindowStatsForest,
    *,
    architecture: str | None = None,
    init_kwargs: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` to ``path`` atomically (``.pt`` for torch, ``.npz`` for the forest).

    Parameters
    ----------
    model:
        A trained torch module (or :class:`~soilsource.learn.training.TorchPatchClassifier`),
        or a fitted :class:`~soilsource.models.baselines.WindowStatsForest`.
    architecture, init_kwargs:
        For torch: a name in :data:`ARCHITECTURES` and the JSON-serialisable keyword
        arguments that rebuild the module; by default taken from SI-LICNet and the
        torchvision baselines themselves (their ``config``). Ignored for the forest.
    metadata:
        JSON-serialisable facts the model needs to be used right: band names and
        normalisation statistics, ``patch_px``, ``patch_m``, the label rule.
    """
    path = Path(path)
    link = getattr(model, "link_", None)
    if isinstance(model, TorchPatchClassifier):
        model = model.module
    header: dict[str, Any] = {
        "format": FORMAT,
        "version": VERSION,
        "soilsource": __version__,
        "metadata": dict(metadata or {}),
    }
    if link is not None:  # a model of the concentration: how its output becomes mg/kg
        header["link"] = link.to_dict()
    if isinstance(model, WindowStatsForest):
        ensemble = model.to_ensemble()
        header.update(
            architecture=FOREST,
            init_kwargs={"scales": list(model.scales_ or ())},
            n_features=ensemble.n_features,
        )
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            # numpy's stubs take the keyword arrays for its own keyword arguments
            arrays = ensemble.arrays()
            np.savez_compressed(f, header=np.array(_dumps(header)), **arrays)  # type: ignore[arg-type]
        return path
    if not isinstance(model, nn.Module):
        raise TypeError(f"cannot save a {type(model).__name__}")
    architecture = architecture or _architecture_of(model)
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {', '.join(ARCHITECTURES)}")
    if init_kwargs is None:
        init_kwargs = getattr(model, "config", None)
    if not isinstance(init_kwargs, Mapping):
        raise ValueError(f"init_kwargs that rebuild the {architecture} are needed")
    header.update(architecture=architecture, init_kwargs=dict(init_kwargs))
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "header": _dumps(header), "state_dict": state}, tmp)
    return path


def _architecture_of(model: nn.Module) -> str | None:
    """Registry name of a soilsource network (SILICNet or a torchvision baseline)."""
    entry = network_spec(model)
    return None if entry is None else entry.name


def save_estimator(
    stem: str | os.PathLike[str], model: Any, metadata: Mapping[str, Any] | None = None
) -> Path | None:
    """Save a fitted estimator as fitting returned it, or return None if it cannot be.

    A standardised torch model (:func:`~soilsource.models.registry.estimator`'s networks)
    goes to ``stem.pt`` with its band statistics in the header, the forest to ``stem.npz``;
    :func:`load_estimator` rebuilds either. Anything else is not saved (None). ``metadata``
    goes into the file's header (a run's final models: scope, patch size, rule, maps).
    """
    stem = Path(stem)
    if isinstance(model, Standardized) and isinstance(model.inner, TorchPatchClassifier):
        if model.stats_ is None:
            raise NotFittedError("Standardized is not fitted: call fit first")
        header = {**(metadata or {}), "band_stats": model.stats_.to_dict()}
        return save_model(stem.with_name(stem.name + ".pt"), model.inner, metadata=header)
    if isinstance(model, WindowStatsForest):
        return save_model(stem.with_name(stem.name + ".npz"), model, metadata=metadata)
    return None


def load_estimator(
    stem: str | os.PathLike[str],
    *,
    settings: TrainSettings | None = None,
    device: str | torch.device = "auto",
) -> PatchEstimator | None:
    """The estimator :func:`save_estimator` wrote at ``stem``, as fitting returned it; None
    when there is none. A network gets the fitting ``settings`` and ``device`` back."""
    stem = Path(stem)
    for suffix in (".pt", ".npz"):
        path = stem.with_name(stem.name + suffix)
        if not path.is_file():
            continue
        saved = load_model(path)
        if isinstance(saved.model, WindowStatsForest):
            return saved.model
        inner = TorchPatchClassifier(
            saved.model,
            settings=settings,
            device=device,
            target="label" if saved.link is None else "value",
        )
        inner.link_ = saved.link
        model = Standardized(inner)
        model.stats_ = BandStats.from_dict(saved.metadata["band_stats"])
        return model
    return None


@dataclass(frozen=True)
class ModelState:
    """A torch model as plain state: registry name, constructor arguments, weights as arrays.

    This is what travels to workers, never a pickled module (whose class, buffers and
    hooks depend on the sending process). :meth:`build` rebuilds the module from the fixed
    registry :data:`ARCHITECTURES`, as loading a model file does. It lives here, beside
    the model files, because it is the same idea: a model as names and arrays, no code.
    """

    architecture: str
    init_kwargs: dict[str, Any]
    weights: dict[str, np.ndarray]

    def build(self) -> nn.Module:
        """The module in evaluation mode on the CPU, with exactly the saved weights."""
        module = ARCHITECTURES[self.architecture](**self.init_kwargs)
        module.load_state_dict({k: torch.from_numpy(v) for k, v in self.weights.items()})
        return module.eval()


def model_state(model: nn.Module) -> ModelState:
    """The :class:`ModelState` of a soilsource network (SI-LICNet or a baseline), which
    :class:`~soilsource.runtime.Session` tasks (map tiles, occlusion batches) rebuild.

    >>> from soilsource.models import SILICNet
    >>> model = SILICNet(2, patch_px=16).eval()
    >>> again = model_state(model).build()
    >>> x = torch.randn(1, 2, 16, 16)
    >>> bool(torch.equal(model(x), again(x)))
    True
    """
    name = _architecture_of(model)
    kwargs = getattr(model, "config", None)
    if name not in ARCHITECTURES or not isinstance(kwargs, dict):
        raise TypeError(f"cannot send a {type(model).__name__} to workers as plain state")
    weights = {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}
    return ModelState(name, dict(kwargs), weights)


def _dumps(header: Mapping[str, Any]) -> str:
    try:
        return json.dumps(header, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"model metadata must be plain JSON: {exc}") from None


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON header of a model file (architecture, init kwargs, metadata)."""
    return _open(Path(path))[0]


def load_model(path: str | os.PathLike[str]) -> SavedModel:
    """Load a model written by :func:`save_model`, executing nothing from the file.

    Raises :class:`~soilsource.errors.InputError` for a missing file, a pickle or any
    other file that is not a soilsource model, an unknown architecture, or weights
    that do not fit it.
    """
    path = Path(path)
    header, payload = _open(path)
    arch = header.get("architecture")
    kwargs = header.get("init_kwargs")
    meta = header.get("metadata")
    if not isinstance(kwargs, dict) or not isinstance(meta, dict):
        raise InputError(path, "header", "init_kwargs and metadata must be objects")
    if isinstance(payload, TreeEnsemble):
        if arch != FOREST:
            raise InputError(path, "header", f"trees stored for architecture {arch!r}")
        scales = kwargs.get("scales")
        if not (isinstance(scales, list) and scales and all(isinstance(s, int) for s in scales)):
            raise InputError(path, "header", "init_kwargs.scales must be a list of integers")
        model: nn.Module | WindowStatsForest = WindowStatsForest.from_ensemble(
            payload, tuple(scales), _link(path, header)
        )
        return SavedModel(model, FOREST, kwargs, meta, _link(path, header))
    if arch not in ARCHITECTURES:
        known = ", ".join(ARCHITECTURES)
        raise InputError(path, "architecture", f"unknown {arch!r} (known: {known})")
    try:
        module = ARCHITECTURES[arch](**kwargs)
        module.load_state_dict(payload, strict=True)
    except (TypeError, ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, "state_dict", f"weights do not fit {arch}: {first}") from None
    module.eval()
    return SavedModel(module, arch, kwargs, meta, _link(path, header))


def _link(path: Path, header: dict[str, Any]) -> LogNormalLink | None:
    """The saved link of a model of the concentration (None for a classifier)."""
    data = header.get("link")
    if data is None:
        return None
    try:
        return LogNormalLink.from_dict(data)
    except (TypeError, KeyError, ValueError):
        raise InputError(path, "header", "link must hold numbers mean, scale and sigma") from None


_NOT_A_MODEL = (
    "not a soilsource model file (a .pt of plain weights or a .npz of trees); "
    "pickle and joblib files are refused because loading them runs code"
)


def _open(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor] | TreeEnsemble]:
    """Header and payload (a state dict, or the trees) of a model file."""
    if not path.is_file():
        raise InputError(path, "", "model file not found")
    if not zipfile.is_zipfile(path):
        raise InputError(path, "", _NOT_A_MODEL)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any(name.endswith("data.pkl") for name in names):
        return _open_torch(path)
    if names and all(name.endswith(".npy") for name in names):
        return _open_forest(path)
    raise InputError(path, "", _NOT_A_MODEL)


def _open_torch(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, ValueError, EOFError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(path, "", f"{_NOT_A_MODEL} ({reason[:200]})") from None
    if not (isinstance(payload, dict) and payload.get("format") == FORMAT):
        raise InputError(path, "", _NOT_A_MODEL)
    state = payload.get("state_dict")
    if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise InputError(path, "state_dict", "must map names to tensors")
    return _header(path, payload.get("header")), state


def _open_forest(path: Path) -> tuple[dict[str, Any], TreeEnsemble]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile) as exc:
        raise InputError(path, "", f"{_NOT_A_MODEL} ({exc})") from None
    if "header" not in arrays or arrays["header"].dtype.kind != "U":
        raise InputError(path, "", _NOT_A_MODEL)
    header = _header(path, str(arrays.pop("header")))
    n_features = header.get("n_features")
    if not isinstance(n_features, int) or n_features < 1:
        raise InputError(path, "header", "n_features must be a positive integer")
    try:
        ensemble = TreeEnsemble.from_arrays(arrays, n_features)
    except ValueError as exc:
        raise InputError(path, "trees", str(exc)) from None
    return header, ensemble


def _header(path: Path, text: object) -> dict[str, Any]:
    if not isinstance(text, str):
        raise InputError(path, "header", "missing")
    try:
        header = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(path, "header", f"not JSON: {exc}") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise InputError(path, "header", _NOT_A_MODEL)
    if header.get("version") != VERSION:
        raise InputError(
            path, "header", f"format version {header.get('version')!r}, expected {VERSION}"
        )
    return header
