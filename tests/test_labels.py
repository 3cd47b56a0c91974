"""Label rules: GB 15618-2018 screening values, strict exceedance, and the rule dispatch."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from soilsource.config import LabelConfig
from soilsource.data.labels import (
    GB15618_TABLE1,
    exceeds,
    gb15618_screening_value,
    label_samples,
    ph_class,
    quantile_limit,
)
from soilsource.errors import InputError

# One pH inside each class of the standard: <= 5.5, (5.5, 6.5], (6.5, 7.5], > 7.5.
PH_PER_CLASS = np.array([5.0, 6.0, 7.0, 8.0])


def test_ph_class_boundaries_follow_the_standard():
    ph = np.array([5.5, 5.500001, 6.5, 6.500001, 7.5, 7.500001, 0.0, 14.0])
    assert ph_class(ph).tolist() == [0, 1, 1, 2, 2, 3, 0, 3]


@pytest.mark.parametrize(
    ("paddy", "expected"),
    [(True, [0.3, 0.4, 0.6, 0.8]), (False, [0.3, 0.3, 0.3, 0.6])],
)
def test_cd_rows(paddy, expected):
    got = gb15618_screening_value("Cd", PH_PER_CLASS, np.full(4, paddy))
    np.testing.assert_allclose(got, expected)


@pytest.mark.parametrize(
    ("metal", "other"),
    [
        ("Hg", [1.3, 1.8, 2.4, 3.4]),
        ("As", [40, 40, 30, 25]),
        ("Pb", [70, 90, 120, 170]),
        ("Cr", [150, 150, 200, 250]),
        ("Cu", [50, 50, 100, 100]),
        ("Ni", [60, 70, 100, 190]),
        ("Zn", [200, 200, 250, 300]),
    ],
)
def test_other_land_rows_of_every_metal(metal, other):
    np.testing.assert_allclose(gb15618_screening_value(metal, PH_PER_CLASS), other)


def test_paddy_rows_and_cu_orchard():
    paddy = np.ones(4, bool)
    np.testing.assert_allclose(
        gb15618_screening_value("Hg", PH_PER_CLASS, paddy), [0.5, 0.5, 0.6, 1]
    )
    np.testing.assert_allclose(gb15618_screening_value("As", PH_PER_CLASS, paddy), [30, 30, 25, 20])
    np.testing.assert_allclose(
        gb15618_screening_value("Pb", PH_PER_CLASS, paddy), [80, 100, 140, 240]
    )
    np.testing.assert_allclose(
        gb15618_screening_value("Cr", PH_PER_CLASS, paddy), [250, 250, 300, 350]
    )
    # Cu ignores paddy: its special row is orchards.
    np.testing.assert_allclose(
        gb15618_screening_value("Cu", PH_PER_CLASS, paddy), [50, 50, 100, 100]
    )
    np.testing.assert_allclose(
        gb15618_screening_value("cu", PH_PER_CLASS, orchard=paddy), [150, 150, 200, 200]
    )
    # Ni and Zn have one row for all land.
    np.testing.assert_allclose(
        gb15618_screening_value("Zn", PH_PER_CLASS, paddy), GB15618_TABLE1["Zn"]["other"]
    )


def test_mixed_paddy_and_nan_ph():
    got = gb15618_screening_value("Cd", np.array([6.0, 6.0, np.nan]), np.array([1, 0, 1]))
    assert got[:2].tolist() == [0.4, 0.3]
    assert np.isnan(got[2])


def test_unknown_metal():
    with pytest.raises(ValueError, match="Fe"):
        gb15618_screening_value("Fe", PH_PER_CLASS)


def test_exceeds_is_strict_and_nan_is_negative():
    got = exceeds(np.array([0.3, 0.30000001, np.nan, 0.1]), np.array([0.3, 0.3, 0.3, np.nan]))
    assert got.tolist() == [False, True, False, False]


def _table(**columns):
    return pd.DataFrame(columns)


def test_rule_threshold():
    labels = label_samples(
        _table(value=[1.9, 2.0, 2.1]), LabelConfig(rule="threshold", threshold=2)
    )
    assert labels.positive.tolist() == [False, False, True]
    assert labels.n_pos == 1
    assert "2 mg/kg" in labels.description


def test_rule_background_default_factor():
    rule = LabelConfig(rule="background", background=0.2)
    labels = label_samples(_table(value=[0.29, 0.31]), rule)
    np.testing.assert_allclose(labels.limit, 0.3)
    assert labels.positive.tolist() == [False, True]


def test_rule_quantile():
    values = np.arange(1.0, 101.0)
    labels = label_samples(_table(value=values), LabelConfig(rule="quantile", q=0.9))
    assert labels.n_pos == 10
    np.testing.assert_allclose(labels.limit[0], np.quantile(values, 0.9))
    assert np.isnan(quantile_limit(np.array([np.nan]), 0.5)).all()


def test_rule_gb15618_uses_ph_and_paddy():
    table = _table(value=[0.35, 0.35, 0.7], ph=[6.0, 6.0, 8.0], paddy=[True, False, False])
    labels = label_samples(table, LabelConfig(rule="gb15618"), metal="Cd")
    assert labels.positive.tolist() == [False, True, True]


def test_rule_gb15618_without_ph_names_the_key():
    with pytest.raises(InputError, match=r"key 'samples.ph'"):
        label_samples(_table(value=[1.0]), LabelConfig(rule="gb15618"), source="s.csv")


def test_rule_gb15618_missing_ph_rows():
    table = _table(value=[1.0, 1.0, 1.0], ph=[6.0, np.nan, np.nan], row=[1, 2, 3])
    table.attrs["columns"] = {"ph": "soil_ph"}
    with pytest.raises(InputError) as info:
        label_samples(table, LabelConfig(rule="gb15618"), source="s.csv")
    assert (
        str(info.value) == "s.csv: column 'soil_ph': rows 2, 3: missing pH, needed by rule gb15618"
    )
