"""Figures of a run (PNG, matplotlib without a display): ROC curves per region.

Each figure is written atomically so that an interrupted run leaves no half image.
"""

from __future__ import annotations

from collections.abc import Mapping
from os import PathLike
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_curve

from soilsource.atomic import atomic_path

# One colour per model, SI-LICNet first and strongest.
_COLOURS = {
    "silicnet": "#c0392b",
    "random_forest": "#2471a3",
    "mobilenet_v3_small": "#239b56",
    "resnet18": "#7d3c98",
}
LABELS = {
    "silicnet": "SI-LICNet",
    "random_forest": "Random forest (window statistics)",
    "mobilenet_v3_small": "MobileNetV3-small",
    "resnet18": "ResNet18",
}


def roc_figure(
    path: str | PathLike[str],
    region: str,
    labels: np.ndarray,
    probabilities: Mapping[str, np.ndarray],
    aucs: Mapping[str, float | None],
    *,
    note: str = "",
) -> Path:
    """ROC curves of several models for one region's out-of-fold predictions.

    Models whose AUC is None (one class, too few positives) are listed without a curve.
    """
    labels = np.asarray(labels).astype(int)
    fig, ax = plt.subplots(figsize=(4.8, 4.6), dpi=120)
    ax.plot([0, 1], [0, 1], color="0.7", lw=1, ls="--", label="chance")
    for name, proba in probabilities.items():
        auc = aucs.get(name)
        label = LABELS.get(name, name)
        finite = np.isfinite(proba)
        if auc is None or len(np.unique(labels[finite])) < 2:
            ax.plot([], [], color=_COLOURS.get(name, "0.3"), label=f"{label}: AUC n/a")
            continue
        fpr, tpr, _ = roc_curve(labels[finite], proba[finite])
        ax.plot(
            fpr,
            tpr,
            color=_COLOURS.get(name),
            lw=2 if name == "silicnet" else 1.3,
            label=f"{label}: AUC {auc:.3f}",
        )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("False positive rate")
    ax.set_ylabel("True positive rate")
    n, n_pos = len(labels), int(labels.sum())
    ax.set_title(f"{region}  (n = {n}, positive = {n_pos})", fontsize=10)
    ax.legend(loc="lower right", fontsize=7, frameon=False)
    if note:
        fig.text(0.01, 0.01, note, fontsize=6, color="0.4")
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
