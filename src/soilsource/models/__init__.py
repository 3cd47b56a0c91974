"""Patch classifiers: SI-LICNet (the method) and the baselines it is compared with."""

from soilsource.models.baselines import BASELINES, WindowStatsForest, make_baseline
from soilsource.models.silicnet import RingPooling, SILICNet

__all__ = ["BASELINES", "RingPooling", "SILICNet", "WindowStatsForest", "make_baseline"]
