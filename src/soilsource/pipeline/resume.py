"""Checkpoints of a run, so that ``soilsource run --resume`` continues a killed run.

A run keeps, in ``OUT/.checkpoints/``:

- ``fingerprint.json``: the resolved configuration and every training setting; a
  resumed run must have the same, or it is refused (its folds would not fit). That
  includes the defaults of :class:`~soilsource.learn.training.TrainSettings`: a run killed
  under one soilsource version is not resumed by a version that trains differently;
- ``cv/MODEL/SCOPE/fold_K.json``: each finished fold's test indices and out-of-fold
  probabilities (JSON floats round-trip exactly, so resumed metrics are
  byte-identical), and ``final.pt`` / ``final.npz``: the final model of the scope,
  in the model file format of :mod:`soilsource.models.modelio` (loaded without pickle, so a
  file planted among the checkpoints runs no code).

- ``explain/NAME.npz``: each explained raster's per-sample object effects (what its
  candidate sources are ranked by; :func:`soilsource.explain.candidates.sample_effects`),
  written before its sensitivity GeoTIFF, so a resumed run that keeps the GeoTIFF ranks
  the candidates without computing the occlusion again.

Explanation and probability maps need no other checkpoint files: each region's GeoTIFF is
written atomically, so one that exists is finished and a resumed run keeps it.
Every checkpoint is written atomically too. A complete run deletes
``.checkpoints/``: its outputs hold everything, and a complete run is not resumed.

Resuming is exact because each fold trains with a seed derived from the run's seed
and the fold number alone (:func:`soilsource.learn.evaluation.cross_validate`).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import sparse

from soilsource.atomic import atomic_path, write_text_atomic
from soilsource.config import Config
from soilsource.errors import InputError
from soilsource.learn.training import (
    PatchEstimator,
    TrainSettings,
)
from soilsource.models.modelio import load_estimator, save_estimator
from soilsource.rundir import safe_stem

CHECKPOINTS = ".checkpoints"
FINGERPRINT = "fingerprint.json"

__all__ = ["CHECKPOINTS", "Checkpoints", "FoldStore", "results_yaml"]


class Checkpoints:
    """The checkpoints of the run directory ``out``.

    Parameters
    ----------
    out:
        The run directory.
    settings, device:
        Training settings and device of the torch models, to rebuild a checkpointed
        final model as the estimator training would have returned.
    """

    def __init__(
        self, out: Path, settings: TrainSettings | None = None, device: str | torch.device = "cpu"
    ) -> None:
        self.folder = Path(out) / CHECKPOINTS
        self.settings = settings or TrainSettings()
        self.device = device

    def fingerprint(self, config_yaml: str) -> dict[str, Any]:
        """What must not change between a killed run and its resumption."""
        return {"config": config_yaml, "settings": asdict(self.settings)}

    def start(self, config_yaml: str) -> None:
        """Begin a new run's checkpoints (any old ones are removed)."""
        self.clear()
        text = json.dumps(self.fingerprint(config_yaml), indent=2, sort_keys=True)
        write_text_atomic(self.folder / FINGERPRINT, text + "\n")

    def resume(self, config_yaml: str) -> None:
        """Check that the killed run had this configuration and these settings.

        A run killed before it wrote its fingerprint had finished nothing: it starts.

        Raises
        ------
        InputError
            The configuration or the training settings differ from the killed run's.
        """
        if not self.verify(config_yaml):
            self.start(config_yaml)

    def verify(self, config_yaml: str) -> bool:
        """:meth:`resume`'s check, writing nothing (the preflight calls it): True when the
        checkpoints are of this configuration and settings, False when there are none.

        Raises
        ------
        InputError
            The configuration or the training settings differ from the killed run's.
        """
        path = self.folder / FINGERPRINT
        if not path.is_file():
            return False
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            reason = f"unreadable checkpoint ({exc}); run without --resume to start again"
            raise InputError(path, "", reason) from None
        now = self.fingerprint(config_yaml)
        if before == now:
            return True
        what = "training settings"
        if not isinstance(before, dict) or before.get("config") != now["config"]:
            what = "configuration"
            changed = _first_changed_key(before, now)
            what += f" (first difference: {changed})" if changed else ""
        raise InputError(
            "--resume",
            str(self.folder.parent),
            f"the {what} differs from the killed run's; "
            "run it with the same configuration, or without --resume to start again",
        )

    def folds(self, model: str, scope: str) -> FoldStore:
        """The store of one model's cross-validation on one scope (a region or pooled)."""
        folder = self.folder / "cv" / safe_stem(model) / safe_stem(scope)
        return FoldStore(folder, self.settings, self.device)

    def save_effects(self, name: str, effects: sparse.csr_matrix) -> None:
        """Keep one raster's per-sample object effects (``name``: its sensitivity file's)."""
        with atomic_path(self._effects_path(name)) as tmp, tmp.open("wb") as f:
            sparse.save_npz(f, effects)

    def load_effects(self, name: str) -> sparse.csr_matrix | None:
        """The effects :meth:`save_effects` kept for ``name``, or None (loaded without
        pickle)."""
        path = self._effects_path(name)
        return sparse.load_npz(path).tocsr() if path.is_file() else None

    def _effects_path(self, name: str) -> Path:
        return self.folder / "explain" / f"{safe_stem(name)}.npz"

    def clear(self) -> None:
        """Remove every checkpoint (when a run is complete, or starts afresh)."""
        shutil.rmtree(self.folder, ignore_errors=True)


class FoldStore:
    """Finished folds and the final model of one cross-validation, as files.

    Implements :class:`soilsource.learn.evaluation.FoldCheckpoint`.
    """

    def __init__(self, folder: Path, settings: TrainSettings, device: str | torch.device) -> None:
        self.folder = folder
        self.settings = settings
        self.device = device

    def _fold_path(self, k: int) -> Path:
        return self.folder / f"fold_{k}.json"

    def load_fold(self, k: int, test: np.ndarray) -> tuple[np.ndarray, dict[str, Any]] | None:
        """Fold ``k``'s probabilities and info; None when it has not finished.

        Raises
        ------
        InputError
            The checkpoint is of other test samples (the inputs changed since).
        """
        path = self._fold_path(k)
        if not path.is_file():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            saved_test = np.asarray(record["test"], dtype=np.int64)
            proba = np.asarray(record["proba"], dtype=np.float64)
            info = dict(record["info"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            reason = f"unreadable checkpoint ({exc}); run without --resume"
            raise InputError(path, "", reason) from None
        if not np.array_equal(saved_test, test) or proba.shape != test.shape:
            raise InputError(
                path,
                "",
                "this fold held other samples in the killed run (did the inputs change?); "
                "run without --resume",
            )
        return proba, info

    def save_fold(self, k: int, test: np.ndarray, proba: np.ndarray, info: dict) -> None:
        """Keep fold ``k`` (NaN probabilities are written as null)."""
        values = [None if not np.isfinite(p) else float(p) for p in np.asarray(proba)]
        record = {"test": np.asarray(test).tolist(), "proba": values, "info": info}
        write_text_atomic(self._fold_path(k), json.dumps(record) + "\n")

    def load_final(self) -> PatchEstimator | None:
        """The final model, rebuilt as training returns it; None when not saved."""
        return load_estimator(self.folder / "final", settings=self.settings, device=self.device)

    def save_final(self, model: PatchEstimator) -> None:
        """Keep the final model (a standardised torch model, or the forest); anything else
        is retrained on resumption."""
        save_estimator(self.folder / "final", model)


def results_yaml(config: Config) -> str:
    """The configuration that decides a run's results: where it computes does not.

    The Dask scheduler is left out, so a run killed on one cluster (or locally) can be
    resumed on another; the results are identical either way (``tests/test_runtime.py``).
    """
    where = config.model_copy(deep=True)
    where.compute.scheduler = None
    return where.to_yaml()


def _first_changed_key(before: Any, now: dict[str, Any]) -> str:
    """The first dotted configuration key whose value differs ('' when unknown)."""
    import yaml

    try:
        old = yaml.safe_load(before["config"])
        new = yaml.safe_load(now["config"])
    except (TypeError, KeyError, yaml.YAMLError):
        return ""

    def walk(a: Any, b: Any, prefix: str) -> str:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in [*a, *(k for k in b if k not in a)]:
                found = walk(a.get(key), b.get(key), f"{prefix}{key}.")
                if found:
                    return found
            return ""
        return prefix.rstrip(".") if a != b else ""

    return walk(old, new, "")
