"""soilsource: find likely sources of soil heavy-metal pollution from imagery and samples.

The package is laid out as the pipeline it runs, with imports flowing one way:
inputs -> labels -> patches -> models -> training and evaluation -> explanation ->
zones and hotspots -> mapping -> report. `soilsource.synth` writes the known-truth
synthetic city used as demo and benchmark; `soilsource.cli` is a thin layer over
the Python API.
"""

__version__ = "0.1.0"
