"""A project of its own that uses lightopt as a plugin: its own LightningModule and data, its own Hydra config.

    python train.py                          # one run: AdamW + the wsd schedule, from lightopt's config groups
    python train.py optimizer=nesterov schedule=cosine schedule.warmup=0.1
    python train.py -m hparams_search=lr     # a 6-trial Optuna sweep whose poor trials are pruned
"""

from __future__ import annotations

import hydra
import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from omegaconf import DictConfig
from sklearn.datasets import load_wine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightopt


class WineClassifier(L.LightningModule):
    """Three wine cultivars from 13 chemical measurements: a small MLP with a LayerNorm."""

    def __init__(self, cfg: DictConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = nn.Sequential(nn.Linear(13, cfg.model.hidden), nn.LayerNorm(cfg.model.hidden), nn.GELU(),
                                 nn.Linear(cfg.model.hidden, 3))
        self.loss = nn.CrossEntropyLoss()

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = self.loss(self.net(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log("val/loss", self.loss(logits, y))
        self.log("val/acc", (logits.argmax(-1) == y).float().mean())

    def configure_optimizers(self):  # noqa: ANN201 - whatever Lightning accepts
        # optimizer, param groups (no decay for biases and the LayerNorm), lr schedule stepped per optimizer step
        return lightopt.configure_optimizers(self, self.cfg)


def loaders(cfg: DictConfig) -> tuple[DataLoader, DataLoader]:
    """Standardized wine data, a fixed 80/20 split."""
    x, y = load_wine(return_X_y=True)
    x = torch.tensor((x - x.mean(0)) / x.std(0), dtype=torch.float32)
    y = torch.tensor(y)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    cut = int(0.8 * len(x))
    train, val = order[:cut], order[cut:]
    return (DataLoader(TensorDataset(x[train], y[train]), batch_size=cfg.data.batch_size, shuffle=True),
            DataLoader(TensorDataset(x[val], y[val]), batch_size=len(val)))


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    L.seed_everything(cfg.seed, verbose=False)
    out_dir = hydra.core.hydra_config.HydraConfig.get().runtime.output_dir
    trainer = L.Trainer(
        max_epochs=cfg.trainer.max_epochs, accelerator="cpu", logger=CSVLogger(out_dir, name="", version=""),
        # inside `-m hparams_search=...` this reports val/acc to the trial and stops pruned runs; else a no-op
        callbacks=[lightopt.OptunaPruning(monitor="val/acc", mode="max"), LearningRateMonitor("step")],
        enable_progress_bar=False, enable_model_summary=False, default_root_dir=out_dir, log_every_n_steps=1,
    )
    train, val = loaders(cfg)
    trainer.fit(WineClassifier(cfg), train, val)
    return float(trainer.callback_metrics["val/acc"])  # the objective of a sweep trial


if __name__ == "__main__":
    main()
