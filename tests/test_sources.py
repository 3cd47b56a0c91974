"""Source apportionment: EPA uncertainties, S/N categories, PMF on known answers, outputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from soilsource.errors import InputError
from soilsource.sources import Apportionment, apportion
from soilsource.sources.pmf import (
    ROBUST_ALPHA,
    best_of_starts,
    factor_range,
    factorise,
    match,
    q_expected,
    q_values,
)
from soilsource.sources.uncertainty import (
    BAD,
    STRONG,
    WEAK,
    equation_uncertainty,
    prepare,
    signal_to_noise,
)

MEUSE = Path(__file__).resolve().parents[1] / "examples" / "meuse" / "samples.csv"


def _constructed(n: int, m: int, p: int, seed: int, noise: float = 0.0):
    """X = G F (x lognormal noise): sparse-ish profiles, contributions with zeros (edges)."""
    rng = np.random.default_rng(seed)
    f = rng.gamma(0.6, 1.0, (p, m)) + 0.01
    f[rng.random((p, m)) < 0.4] = 0.0
    for k in range(p):  # every source has a metal of its own: an identifiable answer
        f[k, k] = f[k].max() + 1.0
    for j in np.flatnonzero(f.sum(axis=0) == 0):  # every metal comes from some source
        f[rng.integers(p), j] = 0.5
    g = rng.lognormal(0.0, 0.8, (n, p)) * (rng.random((n, p)) < 0.7)
    x = g @ f
    if noise:
        x = x * np.exp(rng.normal(0.0, noise, x.shape))
    metals = [f"m{j}" for j in range(m)]
    return pd.DataFrame(x, columns=metals, index=[f"s{i}" for i in range(n)]), g, f


def _limits(frame: pd.DataFrame) -> dict[str, float]:
    return {c: float(0.02 * frame[c].mean()) for c in frame}


# --------------------------------------------------------------------------- uncertainty


def test_equation_uncertainty_by_hand():
    # At or below the MDL: 5/6 x MDL; above: sqrt((EF x c)^2 + (MDL/2)^2).
    unc = equation_uncertainty(np.array([0.01, 0.02, 1.0, 0.5]), 0.02, 0.1)
    expected = [5 / 6 * 0.02, 5 / 6 * 0.02, np.sqrt(0.1**2 + 0.01**2), np.sqrt(0.05**2 + 0.01**2)]
    np.testing.assert_allclose(unc, expected)
    # Per metal (columns).
    unc = equation_uncertainty(np.array([[2.0, 2.0]]), np.array([1.0, 4.0]), np.array([0.2, 0.1]))
    np.testing.assert_allclose(unc, [[np.sqrt(0.4**2 + 0.5**2), 5 / 6 * 4.0]])


def test_prepare_replaces_below_detection_and_missing_values():
    frame = pd.DataFrame(
        {"Cd": [0.01, 0.5, np.nan, 0.3], "Pb": [30.0, 40.0, 50.0, 20.0], "Zn": [1.0, 90, 80, 70]}
    )
    prep = prepare(
        frame,
        {"Cd": 0.02, "Pb": 2.0, "Zn": 5.0},
        {"Cd": 0.1, "Pb": 0.2, "Zn": 0.1},
        weak_sn=0.0,
        bad_sn=0.0,
    )
    x, s = prep.values, prep.uncertainty
    assert x[0, 0] == pytest.approx(0.01)  # MDL / 2
    assert s[0, 0] == pytest.approx(5 / 6 * 0.02)
    assert x[0, 2] == pytest.approx(2.5) and s[0, 2] == pytest.approx(5 / 6 * 5.0)
    assert x[2, 0] == pytest.approx(0.3)  # the median of 0.01, 0.5, 0.3
    assert s[2, 0] == pytest.approx(4 * 0.3)
    assert s[1, 1] == pytest.approx(np.sqrt((0.2 * 40) ** 2 + 1.0**2))
    assert prep.n_below_detection == {"Cd": 1, "Pb": 0, "Zn": 1}
    assert prep.n_missing == {"Cd": 1, "Pb": 0, "Zn": 0}


def test_signal_to_noise_and_categories():
    # EPA PMF 5.0: mean of (x - s) / s where x > s, else 0.
    sn = signal_to_noise(np.array([[3.0, 1.0], [0.5, 5.0]]), np.array([[1.0, 1.0], [1.0, 1.0]]))
    np.testing.assert_allclose(sn, [1.0, 2.0])
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "strong": rng.uniform(5, 10, 100),  # far above its MDL of 0.1
            "weak": rng.uniform(0.5, 1.5, 100),  # around its MDL of 1
            "bad": rng.uniform(0.0, 1.0, 100),  # below its MDL of 1
        }
    )
    prep = prepare(frame, {"strong": 0.1, "weak": 1.0, "bad": 1.0}, 0.1)
    assert prep.category == {"strong": STRONG, "weak": WEAK, "bad": BAD}
    assert prep.signal_to_noise["bad"] < 0.5 <= prep.signal_to_noise["weak"] < 1.0
    assert prep.used == [0, 1]
    # A weak species has its uncertainty tripled.
    plain = equation_uncertainty(prep.values[:, 1], 1.0, 0.1)
    np.testing.assert_allclose(prep.uncertainty[:, 1], 3 * plain)
    # The thresholds are parameters.
    assert (
        prepare(
            frame, {"strong": 0.1, "weak": 1.0, "bad": 1.0}, 0.1, weak_sn=0.1, bad_sn=0.0
        ).category["weak"]
        == STRONG
    )


# --------------------------------------------------------------------------- PMF


def test_q_expected_and_robust_q():
    assert q_expected(100, 8, 3) == 800 - 3 * 108
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    g, f = np.array([[1.0], [1.0]]), np.array([[1.0, 2.0]])
    unc = np.full_like(x, 0.1)
    q_true, q_robust = q_values(x, unc, g, f)
    # Residuals 0, 0, 2, 2 -> scaled 20 and 20: Q_true 800, robust 2 x 4 x 20 = 160.
    assert q_true == pytest.approx(800.0)
    assert q_robust == pytest.approx(2 * ROBUST_ALPHA * 20.0)


@pytest.mark.parametrize("noise, least", [(0.0, 0.99), (0.1, 0.9)])
def test_three_sources_recovered(noise, least):
    frame, g, f = _constructed(300, 7, 3, seed=1, noise=noise)
    prep = prepare(frame, _limits(frame), 0.1 if noise else 0.01)
    best, _ = best_of_starts(prep.values, prep.uncertainty, 3, seed=0, n_starts=4)
    scale = frame.mean().to_numpy()
    idx, cos = match(f / scale, best.profiles / scale)
    assert cos.min() >= least, cos
    for k in range(3):
        r = np.corrcoef(g[:, k], best.contributions[:, idx[k]])[0, 1]
        assert r >= (0.99 if noise == 0 else 0.9), (k, r)
    np.testing.assert_allclose(best.contributions.mean(axis=0), 1.0)


def test_robust_mode_resists_outliers():
    frame, _, f = _constructed(300, 7, 3, seed=2, noise=0.05)
    x = frame.to_numpy().copy()
    rng = np.random.default_rng(3)
    hit = rng.choice(x.size, 15, replace=False)
    x.flat[hit] *= 30.0  # gross errors (a contaminated vial, a typo)
    prep = prepare(pd.DataFrame(x, columns=frame.columns), _limits(frame), 0.05)
    scale = frame.mean().to_numpy()
    cos = {}
    for robust in (True, False):
        best, _ = best_of_starts(prep.values, prep.uncertainty, 3, 0, 4, robust=robust)
        cos[robust] = match(f / scale, best.profiles / scale)[1].min()
        if robust:
            assert best.q_robust < best.q_true
        else:
            assert best.q_robust == best.q_true
    assert cos[True] > cos[False]
    assert cos[True] >= 0.95


@pytest.mark.parametrize("p", [2, 3, 4])
def test_factor_count_chosen(p):
    frame, _, _ = _constructed(150, 6, p, seed=10 + p, noise=0.1)
    result = apportion(frame, _limits(frame), 0.1, "auto", seed=0, n_starts=4, n_bootstrap=0)
    assert result.factors == p, result.summary["choice"]
    assert [c["factors"] for c in result.summary["choice"]] == factor_range(150, 6)


def test_factorise_is_deterministic_and_converges():
    frame, _, _ = _constructed(100, 5, 2, seed=4, noise=0.1)
    prep = prepare(frame, _limits(frame), 0.1)
    a = factorise(prep.values, prep.uncertainty, 2, np.random.default_rng(1))
    b = factorise(prep.values, prep.uncertainty, 2, np.random.default_rng(1))
    np.testing.assert_array_equal(a.profiles, b.profiles)
    assert a.converged and a.iterations < 3000


# --------------------------------------------------------------------------- apportion


def test_apportion_tables_and_bootstrap_deterministic(tmp_path):
    frame, _, _ = _constructed(120, 6, 3, seed=5, noise=0.1)
    kwargs = {"n_starts": 3, "n_bootstrap": 8}
    a = apportion(frame, _limits(frame), 0.1, 3, seed=1, **kwargs)
    b = apportion(frame, _limits(frame), 0.1, 3, seed=1, **kwargs)
    c = apportion(frame, _limits(frame), 0.1, 3, seed=2, **kwargs)
    assert a.summary == b.summary
    pd.testing.assert_frame_equal(a.profiles, b.profiles)
    assert a.summary["bootstrap"] != c.summary["bootstrap"]
    # Tables as in SPEC.md.
    assert list(a.profiles.columns) == ["factor", "metal", "mg_kg_per_unit", "share"]
    assert list(a.contributions.columns) == ["sample_id", "factor", "contribution"]
    assert len(a.profiles) == 3 * 6 and len(a.contributions) == 3 * 120
    shares = a.profiles.groupby("metal")["share"].sum()
    np.testing.assert_allclose(shares, 1.0, atol=1e-5)
    wide = a.contribution_matrix()
    assert list(wide.index) == list(frame.index)
    np.testing.assert_allclose(wide.mean(), 1.0, atol=1e-5)
    # Profiles add up to the modelled mean concentration.
    modelled = wide.to_numpy() @ a.profile_matrix().to_numpy()
    np.testing.assert_allclose(modelled.mean(axis=0), frame.mean(), rtol=0.05)
    boot = a.summary["bootstrap"]
    assert boot["resamples"] == 8 and set(boot["factors"]) == {"1", "2", "3"}
    for entry in boot["factors"].values():
        assert 0.0 <= entry["mapped_share"] <= 1.0
        for lo, mid, hi in entry.get("mg_kg_per_unit", {}).values():
            assert lo <= mid <= hi
    for key in ("factors", "Q_true", "Q_robust", "Q_expected", "bootstrap", "species", "seed"):
        assert key in a.summary
    assert a.summary["Q_expected"] == q_expected(120, 6, 3)
    # Written atomically: the three files, nothing else.
    paths = a.write(tmp_path / "sources")
    assert sorted(p.name for p in (tmp_path / "sources").iterdir()) == [
        "contributions.csv",
        "profiles.csv",
        "summary.json",
    ]
    assert len(paths) == 3
    assert json.loads((tmp_path / "sources" / "summary.json").read_text()) == a.summary
    back = pd.read_csv(tmp_path / "sources" / "profiles.csv")
    np.testing.assert_allclose(back["share"], a.profiles["share"])


def test_bad_species_left_out():
    frame, _, _ = _constructed(100, 5, 2, seed=6, noise=0.1)
    frame["Hg"] = np.random.default_rng(0).uniform(0, 0.01, 100)
    limits = {**_limits(frame), "Hg": 0.05}
    result = apportion(frame, limits, 0.1, 2, n_starts=2, n_bootstrap=0)
    assert result.summary["species"]["Hg"]["category"] == BAD
    assert "Hg" not in set(result.profiles["metal"]) and "Hg" not in result.summary["metals"]


def test_apportion_runs_on_meuse():
    """Meuse: Cd, Cu, Pb, Zn from one flood-borne source; the API runs on the real data."""
    table = pd.read_csv(MEUSE)
    values = table.set_index("sample")[["cadmium", "copper", "lead", "zinc"]]
    limits = {"cadmium": 0.2, "copper": 1.0, "lead": 1.0, "zinc": 1.0}
    result = apportion(values, limits, 0.1, "auto", n_starts=3, n_bootstrap=0)
    assert result.factors in (2, 3)
    assert result.summary["species"]["cadmium"]["n_below_detection"] == 0  # 0.2 is the floor
    assert isinstance(result, Apportionment)


@pytest.mark.parametrize(
    "change, kwargs, message",
    [
        (lambda f: f[["m0", "m1"]], {}, "needs at least 3 metals, got 2 (m0, m1)"),
        (lambda f: f.assign(m0=-f["m0"]), {}, "m0 rows 1, 2, 3"),
        (lambda f: f, {"detection_limit": {"m0": 1.0}}, "detection_limit: no value for m1"),
        (lambda f: f, {"detection_limit": None}, "detection_limit: is required"),
        (lambda f: f.head(8), {}, "8 samples; source apportionment needs at least 10"),
        (lambda f: f.head(12), {"factors": 4}, "4 factors need more samples than 12"),
        (lambda f: f, {"factors": 5}, "must be between 1 and 4 for 5 metals, got 5"),
        (lambda f: f, {"factors": "three"}, "must be 'auto' or a whole number"),
        (lambda f: f, {"error_fraction": -0.1}, "error_fraction: must be a finite number >= 0"),
        (lambda f: f.assign(m2="x"), {}, "m2 rows 1, 2, 3"),
        (lambda f: f.set_axis(["a"] * len(f)), {}, "duplicate sample id 'a'"),
    ],
)
def test_bad_inputs(change, kwargs, message):
    frame, _, _ = _constructed(30, 5, 2, seed=8)
    args = {"detection_limit": _limits(frame), "error_fraction": 0.1, "factors": 2, **kwargs}
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        apportion(change(frame), n_starts=1, n_bootstrap=0, **args)
