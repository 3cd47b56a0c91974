"""Patch classifiers: SI-LICNet (the method) and the baselines it is compared with."""

from soilsource.models.silicnet import RingPooling, SILICNet

__all__ = ["RingPooling", "SILICNet"]
