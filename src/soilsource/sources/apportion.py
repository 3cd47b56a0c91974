"""``apportion``: samples x metals in, source profiles and contributions out (SPEC tables).

The steps, each in its module: uncertainties, below-detection and missing values,
S/N categories (:mod:`.uncertainty`); the factor count, the best of several random
starts, the bootstrap (:mod:`.pmf`); then the three tables of the run directory:

- ``sources/profiles.csv``: factor, metal, mg_kg_per_unit (the profile, per unit of
  mean contribution), share (the factor's share of the metal's modelled total over
  the samples: with mean-1 contributions, its profile value over the sum of all
  factors' profile values for that metal);
- ``sources/contributions.csv``: sample_id, factor, contribution (mean 1 per factor);
- ``sources/summary.json``: factors, Q_true, Q_robust, Q_expected, bootstrap, and
  the species' categories and S/N, the table of the counts tried, the seeds.

Factors are numbered 1..p, the one with the largest summed share first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from soilsource.atomic import write_text_atomic
from soilsource.errors import InputError, format_rows
from soilsource.sources import pmf
from soilsource.sources.uncertainty import BAD, BAD_SN, WEAK_SN, prepare

MIN_METALS = 3
MIN_SAMPLES = 10
N_STARTS = 10  # random starts per factor count (EPA PMF 5.0 suggests 20 base runs)
N_BOOTSTRAP = 50
PERCENTILES = (5, 50, 95)


@dataclass
class Apportionment:
    """The result of :func:`apportion`: the three SPEC tables, ready to write."""

    profiles: pd.DataFrame  # factor, metal, mg_kg_per_unit, share
    contributions: pd.DataFrame  # sample_id, factor, contribution
    summary: dict = field(default_factory=dict)

    @property
    def factors(self) -> int:
        return int(self.summary["factors"])

    def contribution_matrix(self) -> pd.DataFrame:
        """Contributions as samples x factors (index sample_id, columns 1..p)."""
        wide = self.contributions.pivot(index="sample_id", columns="factor", values="contribution")
        order = pd.unique(self.contributions["sample_id"])
        return wide.loc[order]

    def profile_matrix(self, column: str = "mg_kg_per_unit") -> pd.DataFrame:
        """Profiles (or shares) as factors x metals."""
        wide = self.profiles.pivot(index="factor", columns="metal", values=column)
        return wide[pd.unique(self.profiles["metal"])]

    def write(self, directory: str | PathLike[str]) -> list[Path]:
        """Write profiles.csv, contributions.csv and summary.json into ``directory``.

        Each file is written atomically (complete or absent). Returns the paths.
        """
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        paths = [
            write_text_atomic(
                out / "profiles.csv", self.profiles.to_csv(index=False, lineterminator="\n")
            ),
            write_text_atomic(
                out / "contributions.csv",
                self.contributions.to_csv(index=False, lineterminator="\n"),
            ),
            write_text_atomic(
                out / "summary.json", json.dumps(self.summary, indent=2, allow_nan=False) + "\n"
            ),
        ]
        return paths


def apportion(
    values: pd.DataFrame,
    detection_limit: float | Mapping[str, float] | None,
    error_fraction: float | Mapping[str, float] = 0.1,
    factors: int | str = "auto",
    seed: int = 0,
    *,
    n_starts: int = N_STARTS,
    n_bootstrap: int = N_BOOTSTRAP,
    robust: bool = True,
    weak_sn: float = WEAK_SN,
    bad_sn: float = BAD_SN,
    source: str = "samples",
    config_file: str = "config",
) -> Apportionment:
    """Positive matrix factorisation of a samples x metals table (EPA PMF 5.0 practice).

    Parameters
    ----------
    values:
        One row per sample (the index is the sample id), one column per metal, mg/kg;
        NaN for a missing value. At least 3 metals and 10 samples.
    detection_limit:
        mg/kg, one number for all metals or metal -> value (every metal).
    error_fraction:
        Relative analytical error, one number or metal -> value (every metal).
    factors:
        A count, or ``"auto"`` (chosen by Q / Q_expected and stability, see
        :func:`soilsource.sources.pmf.choose_factors`).
    seed:
        Seeds the random starts and the bootstrap: the same seed gives the same tables.
    n_starts, n_bootstrap:
        Random starts per factor count (the lowest Q is kept); bootstrap resamples
        (0: none).
    source:
        Named in error messages as the file the values came from.
    config_file:
        Named in error messages about the ``sources:`` settings (the configuration file).
    """
    x_frame, prep = validate(
        values, detection_limit, error_fraction, factors,
        weak_sn=weak_sn, bad_sn=bad_sn, source=source, config_file=config_file,
    )  # fmt: skip
    used = prep.used
    metals = [prep.metals[j] for j in used]
    x = prep.values[:, used]
    unc = prep.uncertainty[:, used]
    n, m = x.shape
    scale = x.mean(axis=0)
    candidates: list[pmf.Candidate] = []
    if factors == "auto":
        counts = pmf.factor_range(n, m)  # not empty: validate() checked
        p, candidates, reason = pmf.choose_factors(
            x, unc, counts, seed, n_starts, scale, robust=robust
        )
        best = next(c.fit for c in candidates if c.factors == p)
    else:
        p = int(factors)  # in range: validate() checked
        best, fits = pmf.best_of_starts(x, unc, p, seed, n_starts, robust=robust)
        reason = "given"
        candidates = [
            pmf.Candidate(
                p,
                best.q_robust,
                best.q_true,
                pmf.q_expected(n, m, p),
                pmf.stability(best, fits, scale),
                best,
            )
        ]
    order = np.argsort(
        -(best.profiles / best.profiles.sum(axis=0).clip(1e-300)).sum(axis=1), kind="stable"
    )
    g, f = best.contributions[:, order], best.profiles[order]
    shares = f / np.maximum(f.sum(axis=0), 1e-300)
    sample_ids = [str(s) for s in x_frame.index]
    profiles = pd.DataFrame(
        {
            "factor": np.repeat(np.arange(1, p + 1), m),
            "metal": np.tile(metals, p),
            "mg_kg_per_unit": f.ravel().round(6),
            "share": shares.ravel().round(6),
        }
    )
    contributions = pd.DataFrame(
        {
            "sample_id": np.repeat(sample_ids, p),
            "factor": np.tile(np.arange(1, p + 1), n),
            "contribution": g.ravel().round(6),
        }
    )
    boot = {"resamples": int(n_bootstrap)}
    if n_bootstrap > 0:
        base = pmf.Fit(g, f, best.q_true, best.q_robust, best.iterations, best.converged)
        bp, mapped = pmf.bootstrap(x, unc, base, n_bootstrap, seed, scale, robust=robust)
        boot.update(_bootstrap_summary(bp, mapped, metals))
    summary = {
        "factors": p,
        "factors_rule": "auto" if factors == "auto" else "given",
        "factors_reason": reason,
        "Q_true": round(best.q_true, 3),
        "Q_robust": round(best.q_robust, 3),
        "Q_expected": pmf.q_expected(n, m, p),
        "robust": robust,
        "converged": bool(best.converged),
        "iterations": int(best.iterations),
        "n_samples": n,
        "metals": metals,
        "species": {
            mt: {
                "category": prep.category[mt],
                "signal_to_noise": prep.signal_to_noise[mt],
                "detection_limit_mgkg": prep.detection_limit[mt],
                "error_fraction": prep.error_fraction[mt],
                "n_below_detection": prep.n_below_detection[mt],
                "n_missing": prep.n_missing[mt],
            }
            for mt in prep.metals
        },
        "sn_thresholds": {"weak": weak_sn, "bad": bad_sn},
        "choice": [
            {
                "factors": c.factors,
                "Q_true": round(c.q_true, 3),
                "Q_robust": round(c.q_robust, 3),
                "Q_expected": c.q_expected,
                "Q_robust_over_Q_expected": round(c.ratio, 4),
                "stability": round(c.stability, 4),
            }
            for c in candidates
        ],
        "choice_rule": {
            "elbow_drop": pmf.ELBOW_DROP,
            "near_zero": pmf.NEAR_ZERO,
            "min_stability": pmf.MIN_STABILITY,
        },
        "seed": int(seed),
        "starts": int(n_starts),
        "bootstrap": boot,
    }
    return Apportionment(profiles, contributions, summary)


def _bootstrap_summary(profiles: np.ndarray, mapped: np.ndarray, metals: list[str]) -> dict:
    out: dict = {
        "seed_stream": "SeedSequence([seed, 7919])",
        "min_cosine": pmf.BOOT_MIN_COSINE,
        "percentiles": list(PERCENTILES),
        "factors": {},
    }
    for k in range(profiles.shape[1]):
        ok = mapped[:, k]
        entry: dict = {"mapped_share": round(float(ok.mean()), 4)}
        if ok.any():
            q = np.percentile(profiles[ok, k], PERCENTILES, axis=0)
            entry["mg_kg_per_unit"] = {
                mt: [round(float(v), 6) for v in q[:, j]] for j, mt in enumerate(metals)
            }
        out["factors"][str(k + 1)] = entry
    return out


def validate(
    values: pd.DataFrame,
    detection_limit: float | Mapping[str, float] | None,
    error_fraction: float | Mapping[str, float] = 0.1,
    factors: int | str = "auto",
    *,
    weak_sn: float = WEAK_SN,
    bad_sn: float = BAD_SN,
    source: str = "samples",
    config_file: str = "config",
):
    """Every check :func:`apportion` makes before it fits, and nothing else (fast).

    The preflight of ``run`` and ``check`` calls it, so a bad ``sources:`` setting or
    table fails before any training. Returns the numeric table and its uncertainties
    (:class:`~soilsource.sources.uncertainty.Prepared`).

    Raises
    ------
    InputError
        Fewer than 3 metals (or fewer with enough signal), too few samples, bad values,
        detection limits or error fractions, or a factor count the data cannot carry.
    """
    x_frame = _check_values(values, source, config_file)
    prep = prepare(x_frame, detection_limit, error_fraction, weak_sn=weak_sn, bad_sn=bad_sn)
    metals = [prep.metals[j] for j in prep.used]
    if len(metals) < MIN_METALS:
        bad = [m for m in prep.metals if prep.category[m] == BAD]
        raise InputError(
            config_file,
            "key 'sources'",
            f"only {len(metals)} metals have enough signal ({', '.join(bad)} below S/N "
            f"{bad_sn}); source apportionment needs at least {MIN_METALS}",
        )
    n, m = len(x_frame), len(metals)
    if factors == "auto":
        if not pmf.factor_range(n, m):
            raise InputError(
                config_file,
                "key 'sources.factors'",
                f"{n} samples x {m} metals leave no degrees of freedom for 2 factors",
            )
    else:
        _check_factors(factors, n, m, config_file)
    return x_frame, prep


def _check_values(values: pd.DataFrame, source: str, config_file: str) -> pd.DataFrame:
    if not isinstance(values, pd.DataFrame):
        raise InputError(source, "", "expected a table of samples x metals")
    if values.shape[1] < MIN_METALS:
        have = ", ".join(map(str, values.columns)) or "none"
        raise InputError(
            config_file,
            "key 'sources'",
            f"needs at least {MIN_METALS} metals, got {values.shape[1]} ({have})",
        )
    if values.columns.duplicated().any():
        raise InputError(config_file, "key 'sources'", "a metal is given twice")
    if values.index.astype(str).duplicated().any():
        first = values.index[values.index.astype(str).duplicated()][0]
        raise InputError(source, "sample ids", f"duplicate sample id {str(first)!r}")
    if len(values) < MIN_SAMPLES:
        raise InputError(
            source, "", f"{len(values)} samples; source apportionment needs at least {MIN_SAMPLES}"
        )
    out = {}
    for metal in values.columns:
        column = pd.to_numeric(values[metal], errors="coerce")
        text = column.isna() & values[metal].notna()
        if text.any():
            rows = format_rows((np.flatnonzero(text.to_numpy()) + 1).tolist())
            raise InputError(source, f"{metal} {rows}", "not a number")
        if np.isinf(column).any():
            rows = format_rows((np.flatnonzero(np.isinf(column).to_numpy()) + 1).tolist())
            raise InputError(source, f"{metal} {rows}", "infinite value")
        negative = column < 0
        if negative.any():
            rows = format_rows((np.flatnonzero(negative.to_numpy()) + 1).tolist())
            raise InputError(source, f"{metal} {rows}", "negative concentration")
        if column.isna().all():
            raise InputError(source, str(metal), "no values")
        out[str(metal)] = column.astype(float)
    return pd.DataFrame(out, index=values.index)


def _check_factors(factors: object, n: int, m: int, config_file: str) -> int:
    if isinstance(factors, bool) or not isinstance(factors, int | np.integer):
        raise InputError(
            config_file,
            "key 'sources.factors'",
            f"must be 'auto' or a whole number, got {factors!r}",
        )
    p = int(factors)
    if not 1 <= p < m:
        raise InputError(
            config_file,
            "key 'sources.factors'",
            f"must be between 1 and {m - 1} for {m} metals, got {p}",
        )
    if pmf.q_expected(n, m, p) <= 0:
        raise InputError(
            config_file,
            "key 'sources.factors'",
            f"{p} factors need more samples than {n} for {m} metals "
            f"(n x m must exceed p x (n + m))",
        )
    return p
