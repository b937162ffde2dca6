"""Hyperparameter search: the Optuna sweeper behind ``hydra/sweeper=lightopt``, its search space, trial locks,
trial outcomes and outputs, and the sweep report."""
