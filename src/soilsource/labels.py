"""Label rules: when is a soil sample "contaminated" (positive)?

A sample is positive when its measured concentration is *strictly greater* than
the rule's value (SPEC.md). The rules are

- ``threshold``: one fixed value in mg/kg;
- ``gb15618``: the pH-dependent risk screening values of China's GB 15618-2018;
- ``background``: ``factor`` times a background concentration;
- ``quantile``: the ``q``-quantile of the samples' own values.

GB 15618-2018
-------------
GB 15618-2018 "Soil environmental quality - Risk control standard for soil
contamination of agricultural land" (土壤环境质量 农用地土壤污染风险管控标准（试行）),
Ministry of Ecology and Environment of the P.R. China / SAMR, in force 2018-08-01,
Table 1 "Risk screening values for soil contamination of agricultural land" (basic
items), mg/kg, by pH class pH <= 5.5, 5.5 < pH <= 6.5, 6.5 < pH <= 7.5, pH > 7.5.
The table gives separate rows for paddy fields (水田) and other land (其他) for Cd,
Hg, As, Pb and Cr; for Cu it separates orchards (果园) from other land; Ni and Zn
have one row for all land. Table note: values are for total content; for
paddy-upland rotation the stricter (paddy) values apply.
"""

from __future__ import annotations

import numpy as np

# pH class upper bounds (inclusive) of GB 15618-2018, Table 1: pH <= 5.5,
# 5.5 < pH <= 6.5, 6.5 < pH <= 7.5, pH > 7.5.
PH_BOUNDS = (5.5, 6.5, 7.5)

# Risk screening values, mg/kg: metal -> land -> values for the four pH classes.
# "paddy" is 水田, "orchard" is 果园 (Cu only), "other" is 其他.
GB15618_TABLE1: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "Cd": {"paddy": (0.3, 0.4, 0.6, 0.8), "other": (0.3, 0.3, 0.3, 0.6)},
    "Hg": {"paddy": (0.5, 0.5, 0.6, 1.0), "other": (1.3, 1.8, 2.4, 3.4)},
    "As": {"paddy": (30, 30, 25, 20), "other": (40, 40, 30, 25)},
    "Pb": {"paddy": (80, 100, 140, 240), "other": (70, 90, 120, 170)},
    "Cr": {"paddy": (250, 250, 300, 350), "other": (150, 150, 200, 250)},
    "Cu": {"orchard": (150, 150, 200, 200), "other": (50, 50, 100, 100)},
    "Ni": {"other": (60, 70, 100, 190)},
    "Zn": {"other": (200, 200, 250, 300)},
}


def ph_class(ph: np.ndarray) -> np.ndarray:
    """Index 0-3 of the GB 15618 pH class of each pH (NaN gives -1).

    >>> ph_class(np.array([5.5, 5.51, 6.5, 7.5, 7.6, np.nan])).tolist()
    [0, 1, 1, 2, 3, -1]
    """
    ph = np.asarray(ph, dtype=float)
    # right=True: a value equal to a bound falls in the lower class (pH <= 5.5 is class 0).
    cls = np.digitize(ph, PH_BOUNDS, right=True)
    return np.where(np.isnan(ph), -1, cls)


def gb15618_screening_value(
    metal: str,
    ph: np.ndarray,
    paddy: np.ndarray | None = None,
    orchard: np.ndarray | None = None,
) -> np.ndarray:
    """Risk screening value (mg/kg) of GB 15618-2018 Table 1 for each sample.

    Parameters
    ----------
    metal:
        One of Cd, Hg, As, Pb, Cr, Cu, Ni, Zn (case-insensitive).
    ph:
        Soil pH of each sample. NaN gives a NaN screening value.
    paddy:
        True where the sample is on a paddy field (水田); None means no paddy.
        Ignored for Cu, Ni and Zn, whose rows do not depend on paddy.
    orchard:
        True where the sample is in an orchard (果园); used for Cu only, whose
        table row separates orchards from other land. None means no orchard.

    Examples
    --------
    >>> gb15618_screening_value("Cd", np.array([5.0, 6.0, 7.0, 8.0]), np.array([1, 1, 0, 0]))
    array([0.3, 0.4, 0.3, 0.6])
    """
    key = _metal_key(metal)
    ph = np.asarray(ph, dtype=float)
    cls = ph_class(ph)
    rows = GB15618_TABLE1[key]
    n = ph.shape

    def _mask(flags: np.ndarray | None) -> np.ndarray:
        if flags is None:
            return np.zeros(n, dtype=bool)
        return np.broadcast_to(np.asarray(flags).astype(bool), n)

    other = np.asarray(rows["other"], dtype=float)
    out = other[np.clip(cls, 0, 3)]
    if "paddy" in rows:
        special, flags = np.asarray(rows["paddy"], dtype=float), _mask(paddy)
    elif "orchard" in rows:
        special, flags = np.asarray(rows["orchard"], dtype=float), _mask(orchard)
    else:
        special, flags = None, None
    if special is not None:
        out = np.where(flags, special[np.clip(cls, 0, 3)], out)
    return np.where(cls < 0, np.nan, out)


def exceeds(values: np.ndarray, limit: np.ndarray | float) -> np.ndarray:
    """True where ``values`` is strictly greater than ``limit`` (NaN is never positive).

    >>> exceeds(np.array([0.2, 0.3, 0.31]), 0.3).tolist()
    [False, False, True]
    """
    values = np.asarray(values, dtype=float)
    limit = np.asarray(limit, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.greater(values, limit)


def _metal_key(metal: str) -> str:
    for key in GB15618_TABLE1:
        if key.lower() == str(metal).strip().lower():
            return key
    raise ValueError(
        f"metal {metal!r} is not in GB 15618-2018 Table 1 ({', '.join(GB15618_TABLE1)})"
    )
