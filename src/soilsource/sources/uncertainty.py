"""Uncertainties and signal-to-noise of a samples x metals table, as EPA PMF 5.0 sets them.

Follows the EPA Positive Matrix Factorization 5.0 Fundamentals and User Guide (Norris,
Duvall, Brown & Bai 2014, EPA/600/R-14/108), sections 5.1-5.2:

- **equation-based uncertainty** per value, from the method detection limit (MDL) and an
  error fraction: ``5/6 x MDL`` when the concentration is at or below the MDL, else
  ``sqrt((error_fraction x conc)^2 + (0.5 x MDL)^2)``. At 10 % error fraction a value of
  10 x MDL gets about 11 % relative uncertainty, one at 2 x MDL about 25 %;
- **values below the MDL** are replaced by MDL / 2 (the convention the guide describes)
  and get the 5/6 x MDL uncertainty; **missing values** by the species median with
  4 x the median as uncertainty, so they barely weigh in the fit;
- **signal-to-noise** per species (guide eq. 5-3, 5-4): ``d_ij = (x_ij - s_ij) / s_ij``
  where the concentration exceeds its uncertainty, else 0, and S/N is the mean of
  ``d_ij`` over samples. A species measured at 10 x MDL with 10 % error has S/N near 8;
  one mostly below the MDL near 0;
- **categories**: S/N below ``bad_sn`` (default 0.5) -> *bad*, left out of the fit;
  below ``weak_sn`` (default 1.0) -> *weak*, uncertainty tripled; else *strong*. The
  guide's suggestion is 0.5 and 1 for this definition of S/N (the older definition,
  Paatero & Hopke 2003, used 0.2 and 2); both thresholds are parameters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from soilsource.errors import InputError

STRONG, WEAK, BAD = "strong", "weak", "bad"
WEAK_SN = 1.0  # EPA PMF 5.0 guide, section 5.2: weak between 0.5 and 1
BAD_SN = 0.5
WEAK_FACTOR = 3.0  # a weak species' uncertainty is tripled (EPA PMF 5.0)
MISSING_FACTOR = 4.0  # missing value: the median with 4 x the median as uncertainty


@dataclass
class Prepared:
    """A samples x metals table ready for the factorisation.

    ``values`` and ``uncertainty`` cover every metal (below-MDL and missing values
    replaced); ``category`` says which enter the fit (strong and weak; a weak one
    with its uncertainty already tripled in ``uncertainty``).
    """

    metals: list[str]
    values: np.ndarray  # n x m, mg/kg, after replacement
    uncertainty: np.ndarray  # n x m, mg/kg, weak species tripled
    detection_limit: dict[str, float]
    error_fraction: dict[str, float]
    signal_to_noise: dict[str, float]
    category: dict[str, str]
    n_below_detection: dict[str, int]
    n_missing: dict[str, int]

    @property
    def used(self) -> list[int]:
        """Indices of the metals that enter the fit (strong and weak)."""
        return [j for j, m in enumerate(self.metals) if self.category[m] != BAD]


def equation_uncertainty(
    conc: np.ndarray, detection_limit: np.ndarray | float, error_fraction: np.ndarray | float
) -> np.ndarray:
    """EPA PMF 5.0 equation-based uncertainty (mg/kg) of concentrations ``conc``.

    >>> equation_uncertainty(np.array([0.01, 0.02, 1.0]), 0.02, 0.1).round(5).tolist()
    [0.01667, 0.01667, 0.1005]
    """
    conc = np.asarray(conc, float)
    mdl = np.broadcast_to(np.asarray(detection_limit, float), conc.shape)
    ef = np.broadcast_to(np.asarray(error_fraction, float), conc.shape)
    above = np.sqrt((ef * conc) ** 2 + (0.5 * mdl) ** 2)
    return np.where(conc <= mdl, 5.0 / 6.0 * mdl, above)


def signal_to_noise(conc: np.ndarray, uncertainty: np.ndarray) -> np.ndarray:
    """Per species (column): mean over samples of the excess of conc over its uncertainty,
    in units of the uncertainty (0 where conc <= uncertainty); EPA PMF 5.0 eq. 5-3, 5-4.

    >>> signal_to_noise(np.array([[3.0], [0.5]]), np.array([[1.0], [1.0]])).tolist()
    [1.0]
    """
    d = np.where(conc > uncertainty, (conc - uncertainty) / uncertainty, 0.0)
    return d.mean(axis=0)


def per_metal(
    value: float | Mapping[str, float] | None, metals: list[str], name: str, required: bool
) -> dict[str, float]:
    """``value`` (one number for all, or metal -> number) as metal -> float, checked.

    A metal missing from a mapping gets 0 when not ``required`` (no detection limit
    known: nothing is treated as below it), else InputError.
    """
    if value is None:
        if required:
            raise InputError("config", f"sources.{name}", "is required")
        return dict.fromkeys(metals, 0.0)
    if isinstance(value, Mapping):
        out = {}
        for m in metals:
            if m not in value:
                if required:
                    known = ", ".join(map(str, value)) or "none"
                    raise InputError(
                        "config", f"sources.{name}", f"no value for {m} (given for {known})"
                    )
                out[m] = 0.0
            else:
                out[m] = _number(value[m], f"sources.{name}.{m}")
        return out
    number = _number(value, f"sources.{name}")
    return dict.fromkeys(metals, number)


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise InputError("config", where, f"must be a number, got {value!r}")
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise InputError("config", where, f"must be a finite number >= 0, got {value}")
    return value


def prepare(
    values: pd.DataFrame,
    detection_limit: float | Mapping[str, float] | None,
    error_fraction: float | Mapping[str, float] = 0.1,
    weak_sn: float = WEAK_SN,
    bad_sn: float = BAD_SN,
) -> Prepared:
    """Replace below-MDL and missing values, compute uncertainties, S/N and categories.

    ``values``: samples x metals (columns are metal names), mg/kg, non-negative or NaN.
    ``detection_limit``: mg/kg, one for all metals or metal -> value (every metal
    needs one). ``error_fraction``: one for all or metal -> value (every metal needs
    one too; 0.1 is a common choice for soil metals by ICP-MS, 0.05-0.2 in the guide).
    """
    metals = [str(c) for c in values.columns]
    mdl = per_metal(detection_limit, metals, "detection_limit", required=True)
    ef = per_metal(error_fraction, metals, "error_fraction", required=True)
    if not 0.0 <= bad_sn <= weak_sn:
        raise InputError(
            "config", "sources", f"need 0 <= bad_sn <= weak_sn, got {bad_sn}, {weak_sn}"
        )
    x = values.to_numpy(float, na_value=np.nan).copy()
    mdl_row = np.array([mdl[m] for m in metals])
    ef_row = np.array([ef[m] for m in metals])
    missing = np.isnan(x)
    below = ~missing & (x < mdl_row)
    x = np.where(below, mdl_row / 2.0, x)
    unc = equation_uncertainty(np.where(missing, 0.0, x), mdl_row, ef_row)
    if missing.any():
        median = np.nanmedian(np.where(missing, np.nan, x), axis=0)
        median = np.where(np.isnan(median), 0.0, median)
        x = np.where(missing, median, x)
        unc = np.where(missing, MISSING_FACTOR * median, unc)
    if (unc <= 0).any():
        bad = [metals[j] for j in np.flatnonzero((unc <= 0).any(axis=0))]
        raise InputError(
            "config",
            "sources",
            f"zero uncertainty for {', '.join(bad)}: give a detection limit or an error "
            "fraction above 0",
        )
    sn = signal_to_noise(x, unc)
    category = {}
    for j, m in enumerate(metals):
        category[m] = BAD if sn[j] < bad_sn else WEAK if sn[j] < weak_sn else STRONG
        if category[m] == WEAK:
            unc[:, j] *= WEAK_FACTOR
    return Prepared(
        metals=metals,
        values=x,
        uncertainty=unc,
        detection_limit=mdl,
        error_fraction=ef,
        signal_to_noise={m: round(float(s), 4) for m, s in zip(metals, sn, strict=True)},
        category=category,
        n_below_detection={m: int(n) for m, n in zip(metals, below.sum(axis=0), strict=True)},
        n_missing={m: int(n) for m, n in zip(metals, missing.sum(axis=0), strict=True)},
    )
