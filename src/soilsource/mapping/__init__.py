"""Wall-to-wall maps of a trained model, and where those maps can be trusted.

``probability`` writes the probability (and concentration) maps tile by tile;
``applicability`` the area of applicability (Meyer & Pebesma 2021).
"""

from soilsource.mapping.probability import probability_map

__all__ = ["probability_map"]
