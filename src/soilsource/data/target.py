"""What the models learn: the concentration (log scale, with a spread), then the rule.

A label ("above 0.3 mg/kg") throws information away: 0.29 and 0.05 mg/kg are both
"clean", and under GB 15618 each sample has its own limit (its pH and paddy status), which
no image shows. Dichotomising a continuous outcome costs about a third of the effective
sample (Altman & Royston 2006, BMJ 332:1080). So by default (``model.target: value``) every
model regresses the log concentration, and the probability that a sample exceeds *its own*
limit comes from a lognormal predictive distribution:

``P(value > limit) = 1 - Phi((log(limit) - mu) / sigma)``

with ``mu`` the predicted log concentration (so ``exp(mu)`` is the predicted median, mg/kg)
and ``sigma`` the predictive spread in log units, estimated with the model (the torch
models learn it by Gaussian likelihood; the forest takes it from its out-of-bag
residuals).

:class:`LogNormalLink` holds the numbers that turn a model's raw output into those
quantities: the mean and standard deviation of the training log concentrations (the
models see standardised targets ``z``), and ``sigma``. It is saved with every model
(plain JSON numbers), so maps and ``soilsource predict`` apply the same link.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from scipy.stats import norm

__all__ = ["MIN_VALUE", "TARGETS", "LogNormalLink", "Target", "log_values", "required_limit"]

Target = Literal["value", "label"]
TARGETS: tuple[Target, ...] = ("value", "label")

MIN_VALUE = 1e-6
"""Concentrations (mg/kg) are floored here before the log: a zero reading is below
detection, not an infinitely clean soil."""


@dataclass(frozen=True)
class LogNormalLink:
    """From standardised log concentration ``z`` to median and exceedance probability.

    Examples
    --------
    >>> link = LogNormalLink.fit(np.array([0.1, 0.2, 0.4, 0.8]), sigma_z=0.5)
    >>> float(link.median(np.array([0.0]))[0].round(3))  # z = 0: the geometric mean
    0.283
    >>> float(link.exceedance(np.array([0.0]), np.array([0.283]))[0].round(2))
    0.5
    """

    mean: float
    scale: float
    sigma: float

    @classmethod
    def fit(cls, values: np.ndarray, sigma_z: float = 1.0) -> LogNormalLink:
        """Mean and standard deviation of the log of ``values``; ``sigma`` = ``sigma_z``
        times that deviation (the spread learned in standardised units)."""
        logs = log_values(values)
        scale = float(logs.std()) or 1.0
        return cls(float(logs.mean()), scale, float(sigma_z) * scale)

    def with_sigma_z(self, sigma_z: float) -> LogNormalLink:
        """The same standardisation with the spread ``sigma_z`` (standardised units)."""
        return LogNormalLink(self.mean, self.scale, float(sigma_z) * self.scale)

    def encode(self, values: np.ndarray) -> np.ndarray:
        """Standardised log concentration ``z`` of ``values`` (mg/kg)."""
        return ((log_values(values) - self.mean) / self.scale).astype(np.float32)

    def log_value(self, z: np.ndarray) -> np.ndarray:
        """Predicted log concentration ``mu`` (natural log of mg/kg)."""
        return self.mean + self.scale * np.asarray(z, dtype=np.float64)

    def median(self, z: np.ndarray) -> np.ndarray:
        """Predicted median concentration, mg/kg."""
        return np.exp(self.log_value(z))

    def exceedance(self, z: np.ndarray, limit: np.ndarray | float) -> np.ndarray:
        """``P(value > limit)`` under the lognormal predictive distribution."""
        mu = self.log_value(z)
        return norm.sf((np.log(np.maximum(limit, MIN_VALUE)) - mu) / self.sigma)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "lognormal", **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LogNormalLink:
        return cls(float(data["mean"]), float(data["scale"]), float(data["sigma"]))


def required_limit(limit: np.ndarray | float | None) -> np.ndarray | float:
    """The limits a model of the concentration scores against; refuses None.

    >>> required_limit(0.3)
    0.3
    """
    if limit is None:
        raise ValueError("a model of the concentration needs each sample's limit")
    return limit


def log_values(values: np.ndarray) -> np.ndarray:
    """Natural log of concentrations (mg/kg), floored at :data:`MIN_VALUE`."""
    return np.log(np.maximum(np.asarray(values, dtype=np.float64), MIN_VALUE))
