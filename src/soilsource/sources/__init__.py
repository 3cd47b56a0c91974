"""Receptor-model source apportionment: positive matrix factorisation of samples x metals.

``apportion(values, detection_limit, error_fraction, factors="auto", seed=0)`` returns an
:class:`Apportionment` (profiles, contributions, summary; ``write(dir)`` writes
``profiles.csv``, ``contributions.csv`` and ``summary.json``). The modules:

- :mod:`~soilsource.sources.uncertainty`: EPA PMF 5.0 uncertainties, below-detection and
  missing values, signal-to-noise categories;
- :mod:`~soilsource.sources.pmf`: the weighted factorisation (robust Q), the factor
  count, the bootstrap; why it is not EPA's ``esat`` is in its docstring;
- :mod:`~soilsource.sources.apportion`: the entry point and the SPEC tables.

Imports only :mod:`soilsource.errors` and :mod:`soilsource.atomic`.
"""

from soilsource.sources.apportion import Apportionment, apportion, validate

__all__ = ["Apportionment", "apportion", "validate"]
