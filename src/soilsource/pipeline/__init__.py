"""The run layer: ``soilsource run``, ``check`` and ``predict`` over a run directory.

``preflight`` validates every input before anything is trained or written, ``runner`` runs
the pipeline end to end (``run``, ``execute``, several metals), ``resume`` keeps the
checkpoints of ``run --resume``, ``check`` prints the preflight's findings and ``predict``
applies a run's models to new imagery.
"""

from soilsource.pipeline.runner import execute, execute_several, run, run_several

__all__ = ["execute", "execute_several", "run", "run_several"]
