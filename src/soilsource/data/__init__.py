"""What the models learn from: labels, targets, patches, and the per-region dataset.

``labels`` turns concentrations into contaminated / clean by a rule, ``target`` what a model
regresses (log concentration and its spread), ``patches`` reads windows of imagery around the
samples, ``dataset`` puts samples, labels and patches together per region (what training reads).
"""
