"""Hydra plugin for lightopt's Optuna sweeper, ``hydra/sweeper=lightopt``; the logic is in ``lightopt.search``."""
