"""Positive matrix factorisation: X ~ G F with G, F >= 0, weighted by the uncertainties.

PMF (Paatero & Tapper 1994, Environmetrics 5:111-126) minimises

    Q = sum_ij ((x_ij - sum_k g_ik f_kj) / s_ij)^2

over non-negative contributions G (samples x factors) and profiles F (factors x
metals). Here it is solved by weighted hierarchical alternating least squares
(HALS: Cichocki, Zdunek & Amari 2007; Gillis & Glineur 2012): one factor's column of
G, then one factor's row of F, each the exact non-negative minimiser of Q with the
others held, in closed form. Every step lowers Q, and each sweep is a few
vectorised n x m operations (about 1 ms for 2000 samples x 8 metals x 5 factors),
where per-row NNLS calls would cost ~100 x more in Python. Iterations stop when Q
changes by less than ``tol`` (relative) for five sweeps in a row, or at ``max_iter``.

**Robust mode** (EPA PMF 5.0 guide, section 6.3): a value whose scaled residual
``|e_ij / s_ij|`` exceeds ``alpha = 4`` gets its uncertainty inflated by
``sqrt(|e/s| / alpha)``, reweighted every sweep, so one outlier adds ``alpha |e/s|``
to Q instead of ``(e/s)^2`` (Huber). ``Q_robust`` is that objective, ``Q_true`` the
plain Q of the same solution.

**Scale**: each factor's contributions are rescaled to mean 1 over the samples, so a
profile reads in mg/kg per unit of mean contribution and the profiles of the factors
add up to the modelled mean concentration.

**Why not EPA's ESAT** (the open successor of PMF 5.0, Apache-2.0, a Rust core):
``esat 2025.0.1`` pins ``numpy==2.2.6``, ``pandas==2.3.0``, ``scipy==1.15.3``,
``numba==0.61.2``, ``typer==0.16.0``, ``click==8.2.1``, ``psutil==7.0.0``,
``tqdm==4.67.1`` and ``plotly==6.1.2``; soilsource pins numpy 2.4.6, pandas 3.1.1,
scipy 1.17.1, typer 0.29.2, click 8.5.1 (constraints.txt), and
``pip install --dry-run esat -c constraints.txt`` ends in ResolutionImpossible
(checked on 6 Dec 2026; the older ``esat 2024.0.3`` pins click==8.1.7 and fails
the same way). numba 0.61 does not support numpy 2.4 at all, so loosening our pins
would mean downgrading numpy, pandas and scipy under torch and geopandas. The
weighted factorisation is small (this file), so it is implemented here and tested
against known answers (tests/test_sources.py).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

ROBUST_ALPHA = 4.0  # EPA PMF 5.0: scaled residuals beyond 4 are down-weighted
MAX_ITER = 3000
TOL = 1e-7  # relative change of Q per sweep, five sweeps in a row
_TINY = 1e-300
SAME_Q = 0.01  # starts within 1 % of the best Q count for stability


@dataclass
class Fit:
    """One converged factorisation; ``contributions`` have mean 1 per factor."""

    contributions: np.ndarray  # n x p (G)
    profiles: np.ndarray  # p x m (F), mg/kg per unit contribution
    q_true: float
    q_robust: float
    iterations: int
    converged: bool

    @property
    def q(self) -> float:
        """The objective the fit minimised (Q_robust; equal to Q_true when not robust)."""
        return self.q_robust


def q_expected(n: int, m: int, p: int) -> int:
    """Degrees of freedom of the fit: n x m values minus p x (n + m) parameters.

    >>> q_expected(100, 8, 3)
    476
    """
    return n * m - p * (n + m)


def q_values(x: np.ndarray, unc: np.ndarray, g: np.ndarray, f: np.ndarray) -> tuple[float, float]:
    """(Q_true, Q_robust) of a solution (robust: Huber beyond ``ROBUST_ALPHA``)."""
    r = np.abs((x - g @ f) / unc)
    q_true = float(np.sum(r**2))
    q_robust = float(np.sum(np.where(r <= ROBUST_ALPHA, r**2, ROBUST_ALPHA * r)))
    return q_true, q_robust


def factorise(
    x: np.ndarray,
    unc: np.ndarray,
    p: int,
    rng: np.random.Generator | None = None,
    *,
    robust: bool = True,
    init: tuple[np.ndarray, np.ndarray] | None = None,
    max_iter: int = MAX_ITER,
    tol: float = TOL,
) -> Fit:
    """Weighted non-negative factorisation of ``x`` (n x m) into ``p`` factors.

    Starts from ``init`` (G, F) when given, else from random G uniform in
    [0.25, 1.75] and F uniform in [0, 2] x the metal's mean / p (so GF starts near
    the data's scale), drawn from ``rng``.
    """
    x = np.asarray(x, float)
    unc = np.asarray(unc, float)
    n, m = x.shape
    if init is None:
        rng = rng if rng is not None else np.random.default_rng(0)
        g = rng.uniform(0.25, 1.75, (n, p))
        f = rng.uniform(0.0, 2.0, (p, m)) * x.mean(axis=0) / p
    else:
        g, f = (np.array(a, float) for a in init)
    w0 = 1.0 / unc**2
    e = x - g @ f
    q_prev = np.inf
    calm = 0
    converged = False
    it = 0
    while it < max_iter:
        it += 1
        if robust:
            r = np.abs(e) / unc
            w = w0 / np.maximum(1.0, r / ROBUST_ALPHA)
        else:
            w = w0
        for k in range(p):
            e += np.outer(g[:, k], f[k])
            g[:, k] = np.maximum((w * e) @ f[k] / np.maximum(w @ f[k] ** 2, _TINY), 0.0)
            f[k] = np.maximum(g[:, k] @ (w * e) / np.maximum(g[:, k] ** 2 @ w, _TINY), 0.0)
            scale = g[:, k].mean()
            if scale > 0:  # keep mean-1 contributions as we go: same Q, stable numbers
                g[:, k] /= scale
                f[k] *= scale
            e -= np.outer(g[:, k], f[k])
        r = np.abs(e) / unc
        if robust:
            q = float(np.sum(np.where(r <= ROBUST_ALPHA, r**2, ROBUST_ALPHA * r)))
        else:
            q = float(np.sum(r**2))
        calm = calm + 1 if abs(q_prev - q) <= tol * max(q, _TINY) else 0
        q_prev = q
        if calm >= 5 or q <= _TINY:
            converged = True
            break
    q_true, q_robust = q_values(x, unc, g, f)
    if not robust:
        q_robust = q_true
    return Fit(g, f, q_true, q_robust, it, converged)


def best_of_starts(
    x: np.ndarray, unc: np.ndarray, p: int, seed: int, n_starts: int, *, robust: bool = True
) -> tuple[Fit, list[Fit]]:
    """``n_starts`` random starts (seeded, one stream each); the lowest-Q fit and all fits."""
    streams = np.random.SeedSequence([seed, p]).spawn(n_starts)
    fits = [factorise(x, unc, p, np.random.default_rng(s), robust=robust) for s in streams]
    best = min(fits, key=lambda fit: fit.q)
    return best, fits


def normalised_profiles(profiles: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Profiles in units of each metal's ``scale`` (its mean), so every metal weighs alike
    in a cosine (in mg/kg, Zn at ~100 would outweigh Hg at ~0.1)."""
    return profiles / np.maximum(scale, _TINY)


def match(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Match rows of ``a`` to rows of ``b`` one to one by cosine (Hungarian assignment).

    Returns (index into ``b`` for each row of ``a``, that pair's cosine); ``a`` may
    have fewer rows than ``b``.

    >>> idx, cos = match(np.array([[0.0, 1.0], [1.0, 0.1]]), np.eye(2))
    >>> idx.tolist(), cos.round(3).tolist()
    ([1, 0], [1.0, 0.995])
    """
    cos = cosine_matrix(a, b)
    rows, cols = linear_sum_assignment(-cos)
    out = np.full(a.shape[0], -1)
    out[rows] = cols
    return out, cos[np.arange(a.shape[0]), out]


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of every row of ``a`` with every row of ``b``."""
    na = np.linalg.norm(a, axis=1, keepdims=True)
    nb = np.linalg.norm(b, axis=1, keepdims=True)
    return (a / np.maximum(na, _TINY)) @ (b / np.maximum(nb, _TINY)).T


def stability(best: Fit, fits: list[Fit], scale: np.ndarray) -> float:
    """Mean best-match cosine of the profiles of the starts that reach the best start's Q.

    Starts whose Q_robust is within ``SAME_Q`` (1 %) of the best count: among them,
    different profiles mean the data do not pin the solution down (too many factors,
    rotational freedom); 1.0 means every such start lands on the same profiles up to
    order. Starts stuck at a higher Q (a local minimum) are left out: that is a matter
    of the number of starts, not of the factor count. With no other such start: 1.0.
    """
    ref = normalised_profiles(best.profiles, scale)
    cosines = [
        match(ref, normalised_profiles(fit.profiles, scale))[1].mean()
        for fit in fits
        if fit is not best and fit.q <= (1 + SAME_Q) * best.q
    ]
    return float(np.mean(cosines)) if cosines else 1.0


# --------------------------------------------------------------------------- factor count

ELBOW_DROP = 0.25  # Q_robust/Q_expected must keep falling by more than 25 % per factor
NEAR_ZERO = 1e-3  # Q_robust/Q_expected below this: the fit is exact to the noise stated
MIN_STABILITY = 0.9  # mean best-match cosine across starts for a count to be trusted
MAX_AUTO_FACTORS = 6


@dataclass
class Candidate:
    """One factor count tried by :func:`choose_factors`."""

    factors: int
    q_robust: float
    q_true: float
    q_expected: int
    stability: float
    fit: Fit

    @property
    def ratio(self) -> float:
        return self.q_robust / self.q_expected


def factor_range(n: int, m: int, most: int = MAX_AUTO_FACTORS) -> list[int]:
    """Counts ``auto`` tries: 2 .. min(m - 1, ``most``), each with Q_expected > 0.

    >>> factor_range(100, 4), factor_range(1000, 8), factor_range(12, 8)
    ([2, 3], [2, 3, 4, 5, 6], [2, 3, 4])
    """
    return [p for p in range(2, min(m - 1, most) + 1) if q_expected(n, m, p) > 0]


def choose_factors(
    x: np.ndarray,
    unc: np.ndarray,
    counts: list[int],
    seed: int,
    n_starts: int,
    scale: np.ndarray,
    *,
    robust: bool = True,
) -> tuple[int, list[Candidate], str]:
    """The factor count by the elbow of Q_robust / Q_expected, checked by stability.

    For each count p: ``n_starts`` random starts, the best one's Q_robust / Q_expected
    (r_p) and the stability across starts (:func:`stability`). The elbow is the
    smallest p after which r stops falling substantially: the last p whose factor
    lowered r by ELBOW_DROP (25 %) or more, every later one lowering it by less (a
    factor that only fits noise lowers Q by about its n + m parameters, which
    Q_expected already subtracts, so r stays about flat; an early small drop followed
    by large ones is not an elbow). Noise-free data: the first p with r_p < NEAR_ZERO.
    Without any such drop, the smallest count. If the elbow's stability is below
    MIN_STABILITY (0.9), the largest smaller count that is stable is taken instead
    (starts that agree on Q but not on the profiles: more factors than the data pin
    down); if none is, the elbow stays.

    The thresholds were set on constructed data only (``_constructed`` in
    tests/test_sources.py, seeds 12-14 and 52-54: 150-400 samples, 6-8 metals, 2-4
    sources, 10 % lognormal noise, 4 starts), never on a benchmark's seeds: the factor
    that completes the true count lowered r by 79-90 %, a factor beyond it by at most
    12 % (-4 % to 12 %); 25 % lies between with room on both sides, and all 18 cases
    got the true count (stability 1.0 at the true count in each). A real source that
    adds little to any metal can fall under the 25 % and be merged: the summary's
    ``choice`` table shows r and stability for every count, so a user can overrule
    with a fixed ``factors``. Returns (p, candidates, reason).
    """
    cands = []
    for p in counts:
        best, fits = best_of_starts(x, unc, p, seed, n_starts, robust=robust)
        n, m = x.shape
        cands.append(
            Candidate(
                p,
                best.q_robust,
                best.q_true,
                q_expected(n, m, p),
                stability(best, fits, scale),
                best,
            )
        )
    exact = [c for c in cands if c.ratio < NEAR_ZERO]
    if len(cands) == 1:
        elbow, reason = cands[0], f"the only count tried (2 .. m - 1 for {x.shape[1]} metals)"
    elif exact:
        elbow = exact[0]
        reason = (
            f"Q_robust/Q_expected {elbow.ratio:.2g} < {NEAR_ZERO} at {elbow.factors}: exact fit"
        )
    else:
        # The last count that still lowered r by ELBOW_DROP or more: after it, r stops
        # falling substantially (an early small drop followed by big ones is no elbow).
        elbow, reason = cands[0], f"no count lowers Q_robust/Q_expected by {ELBOW_DROP:.0%}"
        for a, b in itertools.pairwise(cands):
            if b.ratio <= (1 - ELBOW_DROP) * a.ratio:
                elbow = b
                reason = (
                    f"elbow: {b.factors} factors lower Q_robust/Q_expected by "
                    f"{1 - b.ratio / a.ratio:.0%}, every larger count by less than "
                    f"{ELBOW_DROP:.0%}"
                )
    chosen = elbow
    if elbow.stability < MIN_STABILITY:
        stable = [c for c in cands if c.factors < elbow.factors and c.stability >= MIN_STABILITY]
        if stable:
            chosen = stable[-1]
            reason += (
                f"; {elbow.factors} factors unstable (stability {elbow.stability:.3f} < "
                f"{MIN_STABILITY}), so {chosen.factors}"
            )
        else:
            reason += f"; unstable (stability {elbow.stability:.3f}) but no smaller count is stable"
    return chosen.factors, cands, reason


# --------------------------------------------------------------------------- bootstrap

BOOT_MIN_COSINE = 0.8  # a resample's factor maps to a base factor at this cosine or more
BOOT_MAX_ITER = 1000


def bootstrap(
    x: np.ndarray,
    unc: np.ndarray,
    base: Fit,
    n_resamples: int,
    seed: int,
    scale: np.ndarray,
    *,
    robust: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Profiles refitted on resampled samples, each factor mapped to the base run's.

    Samples are drawn with replacement (plain bootstrap: soil samples are not a time
    series, so EPA's block bootstrap has no blocks to keep); each resample starts from
    the base profiles and the resampled base contributions (EPA PMF 5.0 also starts
    its bootstrap runs from the base solution) and is matched to the base factors one
    to one by cosine of the normalised profiles (Hungarian). Returns (profiles,
    mapped): ``profiles[b, k]`` the resample's profile mapped to base factor k
    (mg/kg per unit contribution), ``mapped[b, k]`` whether that match reaches
    BOOT_MIN_COSINE (0.8).
    """
    n = x.shape[0]
    p, m = base.profiles.shape
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7919]))
    profiles = np.zeros((n_resamples, p, m))
    mapped = np.zeros((n_resamples, p), bool)
    ref = normalised_profiles(base.profiles, scale)
    for b in range(n_resamples):
        rows = rng.integers(0, n, n)
        fit = factorise(
            x[rows],
            unc[rows],
            p,
            robust=robust,
            init=(base.contributions[rows], base.profiles),
            max_iter=BOOT_MAX_ITER,
        )
        idx, cos = match(ref, normalised_profiles(fit.profiles, scale))
        profiles[b] = fit.profiles[idx]
        mapped[b] = cos >= BOOT_MIN_COSINE
    return profiles, mapped
