"""Explanations: where in the landscape the model looks when it calls a sample contaminated."""

from soilsource.explain.occlusion import occlusion_sensitivity

__all__ = ["occlusion_sensitivity"]
