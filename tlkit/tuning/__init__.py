"""Hyperparameter and backbone search (``tlkit tune``; named `tuning` so that it never shadows the API
function `tlkit.tune`): Optuna studies whose trials train heads on the feature store's cached features."""
