"""One training run: the LightningModule, data and models, the run from config to ``results.json``, its console,
W&B tracking, speed settings, the lr finder, and a sweep trial's side of pruning and DDP. It never imports the
search."""
