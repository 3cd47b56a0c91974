"""Every model soilsource trains, in one table: the name used in the configuration, metrics,
model files and figures maps to how it is built and shown.

Each :class:`ModelSpec` says how to make a fresh, untrained estimator with one protocol
(:class:`~soilsource.learn.training.PatchEstimator`: ``fit``, ``predict_proba`` for the
probability of exceeding a limit, ``predict_value`` for the predicted median
concentration), its label and colour in figures and the report, the memory one network
takes on disk (the preflight's estimate), the torch architecture a model file may
rebuild, and what the explanation and mapping code can do with it. Code elsewhere asks
the registry (:func:`network_spec`, :func:`estimator`) instead of testing classes.

The configuration (``model.baselines``) validates names with its own ``Literal``, since it
sits below the models in the layers; ``tests/test_registry.py`` keeps the two equal.

>>> [spec.label for spec in REGISTRY.values()]
['SI-LICNet', 'Random forest (window statistics)', 'MobileNetV3-small', 'ResNet18']
>>> type(estimator("random_forest", 6, 32)).__name__
'WindowStatsForest'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from soilsource.data.target import Target
from soilsource.learn.training import (
    PatchEstimator,
    Standardized,
    TorchPatchClassifier,
    TrainSettings,
)
from soilsource.models.baselines import mobilenet_v3_small, random_forest, resnet18
from soilsource.models.silicnet import SILICNet

__all__ = [
    "BASELINES",
    "COLOURS",
    "LABELS",
    "METHOD",
    "REGISTRY",
    "ModelSpec",
    "estimator",
    "network_spec",
    "spec",
]


@dataclass(frozen=True)
class ModelSpec:
    """One model: what it is called, how it is built, what it can do."""

    name: str
    """Name in the configuration, metrics.json, predictions and model files."""
    label: str
    """Display name in figures and the report."""
    colour: str
    """Its colour in the ROC figures (SI-LICNet first and strongest)."""
    network: Callable[..., nn.Module] | None
    """The torch architecture, ``network(in_channels, patch_px=..., **kwargs)``, also what a
    model file naming ``name`` is rebuilt with; None for a model that is not a network."""
    saved_bytes: int = 0
    """Bytes of one saved network (an upper bound), for the preflight's estimate of what a
    run writes: SI-LICNet per ensemble member about 60 KiB in the demo, the torchvision
    baselines 6 and 45 MB; 0 for the forest (its files are small beside the maps)."""
    forest: Callable[..., PatchEstimator] | None = None
    """For a model that is not a network: ``forest(in_channels, patch_px, target=...)``."""
    dense_maps: bool = False
    """Exact dense probability maps (the trunk once per region, rings as box sums)."""
    incremental_occlusion: bool = False
    """Exact incremental occlusion (only what an occluding window changes is recomputed)."""


METHOD = "silicnet"
"""The method's own network (SI-LICNet); every other entry is a baseline."""

REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            METHOD,
            "SI-LICNet",
            "#c0392b",
            SILICNet,
            saved_bytes=256 * 2**10,
            dense_maps=True,
            incremental_occlusion=True,
        ),
        ModelSpec(
            "random_forest",
            "Random forest (window statistics)",
            "#2471a3",
            None,
            forest=random_forest,
        ),
        ModelSpec(
            "mobilenet_v3_small",
            "MobileNetV3-small",
            "#239b56",
            mobilenet_v3_small,
            saved_bytes=8 * 2**20,
        ),
        ModelSpec("resnet18", "ResNet18", "#7d3c98", resnet18, saved_bytes=48 * 2**20),
    )
}
"""Every model by name, the method first."""

BASELINES = tuple(name for name in REGISTRY if name != METHOD)
"""The names ``model.baselines`` may list."""

LABELS = {name: entry.label for name, entry in REGISTRY.items()}
COLOURS = {name: entry.colour for name, entry in REGISTRY.items()}


def spec(name: str) -> ModelSpec:
    """The registry entry of ``name``.

    Raises
    ------
    ValueError
        ``name`` is not a model of soilsource (the known names are listed).
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}") from None


def network_spec(model: object) -> ModelSpec | None:
    """The registry entry of a torch network, or None for anything else.

    SI-LICNet is known by its class; a torchvision baseline by the registry name it
    carries (``architecture``, set by its factory).

    >>> network_spec(SILICNet(2, patch_px=16)).incremental_occlusion
    True
    >>> network_spec(nn.Conv2d(2, 1, 3)) is None
    True
    """
    for entry in REGISTRY.values():
        if isinstance(entry.network, type) and isinstance(model, entry.network):
            return entry
    name = getattr(model, "architecture", None)
    return REGISTRY.get(name) if isinstance(name, str) else None


def estimator(
    name: str,
    in_channels: int,
    patch_px: int,
    *,
    target: Target = "label",
    settings: TrainSettings | None = None,
    device: str | torch.device = "auto",
    build: Callable[[], nn.Module] | None = None,
    **network_kwargs: Any,
) -> PatchEstimator:
    """A fresh, untrained estimator of the model ``name``.

    A network is wrapped in :class:`~soilsource.learn.training.Standardized` around
    :class:`~soilsource.learn.training.TorchPatchClassifier`, so each fold's band
    statistics come from its own training samples; the forest reads physical values (NaN
    where there is no data) and needs no scaling. ``build`` replaces the network's default
    construction (a configured SI-LICNet, or one starting from a pretrained trunk);
    ``network_kwargs`` go to the architecture otherwise.
    """
    entry = spec(name)
    if entry.network is None:
        if entry.forest is None:
            raise ValueError(f"model {name!r} has neither a network nor a forest")
        return entry.forest(in_channels, patch_px, target=target)
    network = (
        build()
        if build is not None
        else entry.network(in_channels, patch_px=patch_px, **network_kwargs)
    )
    return Standardized(
        TorchPatchClassifier(network, settings=settings, device=device, target=target)
    )
