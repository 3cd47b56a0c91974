"""The synthetic six-region city: a Pearl-River-Delta-like study area with known truth.

``write_city(out, seed=0, size_px=None)`` writes imagery, land use, soil samples (Cd and
seven other metals), the truth (sources, anthropogenic contribution, the metals' source
profiles and contributions, summary) and a ready ``config.yaml``.
The modules follow the generation order:

- :mod:`~soilsource.synth.recipes`: the six regions as parameters, land-use codes;
- :mod:`~soilsource.synth.landscape`: river, roads, parcels, buildings, land use;
- :mod:`~soilsource.synth.spectra`: Sentinel-2-like imagery from the landscape;
- :mod:`~soilsource.synth.cadmium`: sources, contribution, background, pH, samples;
- :mod:`~soilsource.synth.metals`: Pb, Zn, Cu, Ni, Cr, As, Hg beside Cd from five sources
  with known profiles (the truth of source apportionment);
- :mod:`~soilsource.synth.city`: one region at a time, then the files.

See ``docs/synthetic_city.md`` for what is simulated and why.
"""

from soilsource.synth.city import build_region, write_city
from soilsource.synth.recipes import REGIONS, LandUse

__all__ = ["REGIONS", "LandUse", "build_region", "write_city"]
