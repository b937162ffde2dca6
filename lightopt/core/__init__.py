"""The optimisation core the plugin exports: optimizers, learning-rate schedules, regularization, and the
``configure_optimizers`` glue for any LightningModule. It imports nothing of a training run or a search."""
