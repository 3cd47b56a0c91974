"""Patch models: SI-LICNet (the method), the baselines it is compared with, and the one
registry of every model (:mod:`soilsource.models.registry`)."""

from soilsource.models.baselines import WindowStatsForest
from soilsource.models.registry import BASELINES, REGISTRY, estimator
from soilsource.models.silicnet import RingPooling, SILICNet

__all__ = ["BASELINES", "REGISTRY", "RingPooling", "SILICNet", "WindowStatsForest", "estimator"]
