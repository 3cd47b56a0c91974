"""Fitting and scoring patch estimators, independent of the architecture.

``training`` fits a torch patch model (augmentation, weighted loss, early stopping),
``folds`` holds the cross-validation designs (kNNDM, spatial blocks, buffered, random; each a
fold object with a scikit-learn-style ``split(xy, y, groups)``), ``evaluation`` runs
cross-validation and scores it (AUC with bootstrap intervals, paired differences, Brier).
The concrete models live one layer up, in ``soilsource.models``.
"""
