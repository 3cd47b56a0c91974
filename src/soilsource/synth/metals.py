"""Seven more metals (Pb, Zn, Cu, Ni, Cr, As, Hg) beside Cd, from five sources with known profiles.

Receptor models (PMF) split a samples x metals table into source profiles and
contributions; to score them the city needs both as truth. Each source is one
spatial field (its *contribution*, read at the samples) times one fixed profile
(mg/kg of each metal per unit of the field), so the truth is exactly rank one per
source, as PMF assumes:

- **industrial** (smelting, plating, e-waste: Zn > Pb > Cu, Cd, Hg): the ``site`` plus
  ``atmospheric`` Cd pathways of :mod:`~soilsource.synth.cadmium` (emitting parcels,
  their halos and the stacks' plumes), unit mg/kg of industrial Cd;
- **traffic** (tyre wear Zn, brake Cu, legacy leaded petrol Pb): the ``traffic`` Cd
  pathway (decay from road edges by road class), unit mg/kg of traffic Cd;
- **irrigation** (river water with effluents, arsenic-bearing sediment: Cd-As-Hg): the
  ``irrigation`` Cd pathway (paddies near canals, downstream of dischargers, banks);
- **geogenic** (parent material: Ni-Cr-As rich, every metal present): the natural Cd
  background (granite, alluvium, marine sediments, shale patches, spatial noise),
  unit mg/kg of background Cd;
- **fertiliser** (manure and agrochemicals: Zn-Cu with some As; no Cd here, see
  below): a new field, a dose per farm parcel (lognormal, sd 0.8 in log units),
  orchards and dry farmland 1.0, paddies 0.6 of it, zero off farmland; unit: the
  dose relative to the mean orchard parcel.

The Cd of samples.csv is exactly what it was before these metals existed
(``cd_mgkg`` = (background + the four pathways) x lab error): its profile value is 1
for the four Cd-carrying sources and 0 for fertiliser, so Cd's noise-free value is
the sum of the fields' Cd, unchanged. Everything here comes from a generator of its
own (the fifth stream of the region's seed), so the Cd stream is not touched.

Profiles in mg/kg per unit (per mg/kg of the source's Cd; fertiliser per unit dose).
The geogenic one gives Pearl River Delta-like background soils (Pb ~40, Zn ~80, Cu ~22,
Ni ~29, Cr ~68, As ~12, Hg ~0.05 mg/kg at the mean background Cd of 0.17). Each
anthropogenic source is strongly enriched in its tracers relative to that background
(industrial Hg/Cd 10 x the geogenic ratio, traffic Pb, Zn, Cu/Cd 4-9 x, irrigation
As/Cd 6 x, fertiliser Cu and Zn without Cd): a source whose profile were the
background's in proportion could trade contribution with the background at no cost
in fit (PMF's rotational ambiguity, Paatero et al. 2002), and no receptor model
could name it. The profiles were set on a city of seed 100 (512 px), never on the
benchmark's seeds (0-2); with them the demo-size city of seed 100 is a contaminated
one: sample means Pb 65, Zn 200, Cu 160 (orchards), As 30, Hg 0.3 mg/kg, 2 % of
the Hg below its detection limit. The lab adds lognormal noise (CV 10 %, Hg 20 %),
reports to 0.1 mg/kg (Hg 0.001) and below the detection limit half of it, as for Cd.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from soilsource.synth.landscape import Landscape
from soilsource.synth.recipes import LandUse

METALS = ("Cd", "Pb", "Zn", "Cu", "Ni", "Cr", "As", "Hg")
COLUMNS = {m: f"{m.lower()}_mgkg" for m in METALS}  # Cd keeps cd_mgkg
SOURCES = ("industrial", "traffic", "irrigation", "geogenic", "fertiliser")

# mg/kg of each metal (in METALS order) per unit of the source's field (see the docstring).
PROFILES_MGKG = {
    #              Cd    Pb      Zn      Cu     Ni     Cr     As     Hg
    "industrial": (1.0, 60.0, 200.0, 40.0, 0.0, 0.0, 0.0, 3.0),
    "traffic": (1.0, 1000.0, 3000.0, 1200.0, 0.0, 20.0, 0.0, 0.0),
    "irrigation": (1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 400.0, 0.5),
    "geogenic": (1.0, 230.0, 470.0, 130.0, 170.0, 400.0, 70.0, 0.3),
    "fertiliser": (0.0, 0.0, 60.0, 150.0, 0.0, 0.0, 4.0, 0.0),
}
FERTILISER_DOSE = {LandUse.DRY_FARMLAND_ORCHARD: 1.0, LandUse.PADDY: 0.6}
FERTILISER_SIGMA = 0.8  # lognormal sd of a parcel's dose

LAB_CV = {"Pb": 0.1, "Zn": 0.1, "Cu": 0.1, "Ni": 0.1, "Cr": 0.1, "As": 0.1, "Hg": 0.2}
DETECTION_LIMIT_MGKG = {
    "Pb": 2.0,
    "Zn": 3.0,
    "Cu": 1.0,
    "Ni": 1.0,
    "Cr": 2.0,
    "As": 1.0,
    "Hg": 0.03,
}
ROUNDING = {"Hg": 3}  # decimals; the others 1 (0.1 mg/kg)


def source_fields(samples: pd.DataFrame, land: Landscape, rng: np.random.Generator) -> pd.DataFrame:
    """Each source's contribution (its field, in its unit) at the samples.

    ``samples`` are :func:`soilsource.synth.city.build_region`'s, with the Cd pathways
    (``site``, ``atmospheric``, ``traffic``, ``irrigation``, already at the region's
    strength scale), ``background``, ``row`` and ``col``.
    """
    dose = np.exp(rng.normal(-0.5 * FERTILISER_SIGMA**2, FERTILISER_SIGMA, len(land.parcels) + 1))
    rows, cols = samples["row"].to_numpy(), samples["col"].to_numpy()
    lu = land.landuse[rows, cols]
    pid = land.parcel_id[rows, cols]
    per_class = np.zeros(lu.shape)
    for cls, share in FERTILISER_DOSE.items():
        per_class[lu == cls] = share
    return pd.DataFrame(
        {
            "industrial": samples["site"].to_numpy() + samples["atmospheric"].to_numpy(),
            "traffic": samples["traffic"].to_numpy(),
            "irrigation": samples["irrigation"].to_numpy(),
            "geogenic": samples["background"].to_numpy(),
            "fertiliser": per_class * np.where(pid > 0, dose[pid], 0.0),
        },
        index=samples.index,
    )


def profile_matrix(metals: tuple[str, ...] = METALS) -> np.ndarray:
    """Sources x metals, mg/kg per unit of each source's field."""
    index = [METALS.index(m) for m in metals]
    return np.array([[PROFILES_MGKG[s][j] for j in index] for s in SOURCES])


def true_concentrations(fields: pd.DataFrame) -> pd.DataFrame:
    """Noise-free mg/kg of every metal: the fields times the profiles."""
    values = fields[list(SOURCES)].to_numpy() @ profile_matrix()
    return pd.DataFrame(values, columns=list(METALS), index=fields.index)


def measure_metals(true: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """What the lab reports for the metals other than Cd: lognormal error, rounding,
    below the detection limit half of it (the Cd convention). Columns ``pb_mgkg``..."""
    out = {}
    for metal in METALS[1:]:
        sd = np.sqrt(np.log1p(LAB_CV[metal] ** 2))
        factor = np.exp(rng.normal(-0.5 * sd**2, sd, len(true)))
        value = np.round(true[metal].to_numpy() * factor, ROUNDING.get(metal, 1))
        limit = DETECTION_LIMIT_MGKG[metal]
        out[COLUMNS[metal]] = np.where(value < limit, limit / 2, value)
    return pd.DataFrame(out, index=true.index)


def add_metals(samples: pd.DataFrame, land: Landscape, rng: np.random.Generator) -> pd.DataFrame:
    """``samples`` with, per source, ``src_SOURCE`` (its field), per metal other than Cd
    ``true_xx`` (noise-free) and ``xx_mgkg`` (reported). Cd's columns are left alone."""
    fields = source_fields(samples, land, rng)
    true = true_concentrations(fields)
    measured = measure_metals(true, rng)
    out = samples.copy()
    for source in SOURCES:
        out[f"src_{source}"] = fields[source]
    for metal in METALS[1:]:
        out[f"true_{metal.lower()}"] = true[metal]
        out[COLUMNS[metal]] = measured[COLUMNS[metal]]
    return out


def truth_tables(truth: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(source_profiles, source_contributions) of the whole city from truth/samples.csv rows.

    Contributions are rescaled to mean 1 over the city's samples per source (as PMF
    scales its factors) and the profiles by the inverse, so ``mg_kg_per_unit`` x
    contribution summed over sources is the noise-free concentration. ``share``: the
    source's share of the metal's total over the samples.
    """
    fields = truth[[f"src_{s}" for s in SOURCES]].to_numpy()
    mean = fields.mean(axis=0)
    unit = np.where(mean > 0, mean, 1.0)
    profiles = profile_matrix() * unit[:, None]
    totals = profiles.sum(axis=0)
    shares = profiles / np.where(totals > 0, totals, 1.0)
    prof = pd.DataFrame(
        {
            "source": np.repeat(SOURCES, len(METALS)),
            "metal": np.tile(METALS, len(SOURCES)),
            "mg_kg_per_unit": profiles.ravel().round(6),
            "share": shares.ravel().round(6),
        }
    )
    contrib = pd.DataFrame(
        {
            "sample_id": np.repeat(truth["sample_id"].to_numpy(), len(SOURCES)),
            "region": np.repeat(truth["region"].to_numpy(), len(SOURCES)),
            "source": np.tile(SOURCES, len(truth)),
            "contribution": (fields / unit).ravel().round(6),
        }
    )
    return prof, contrib
