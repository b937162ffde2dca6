"""The LightningModule that ``train.py`` trains: any ``nn.Module`` plus a loss, optimized by lightopt.

It logs ``train/loss``, ``train/penalty`` (when an explicit L1/L2 penalty is on), the learning rate of
every param group each optimizer step (``train/lr``, and ``train/lr/<group>`` when there are several),
``val/loss`` and, for classification, ``val/acc``. Building the optimizer and schedule is delegated to
:func:`lightopt.plugin.configure_optimizers`; run bookkeeping (results.json) lives in :mod:`lightopt.results`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import Tensor, nn

from lightopt.plugin import configure_optimizers
from lightopt.regularization import build_penalty


class LitModel(L.LightningModule):
    """Supervised training of ``model`` under ``loss``.

    Args:
        model: the network.
        loss: the criterion, ``loss(model(x), y)``.
        optimizer, schedule, regularization, lr_multipliers: lightopt config sections.
        task: ``"classification"`` (adds accuracy) or ``"regression"``.
        num_classes: number of classes for accuracy.
        seed: when set, the global RNG is reseeded from ``(seed, epoch)`` at each epoch start, so dropout
            masks, like the data order, do not depend on whether the run was resumed.
        divergence_check_every: optimizer steps between checks of the loss for NaN/inf. A check reads the
            loss on the host, which is a device sync on GPU, so it is not done every step there.
    """

    def __init__(
        self,
        model: nn.Module,
        loss: nn.Module,
        optimizer: Mapping,
        schedule: Mapping | None = None,
        regularization: Mapping | None = None,
        lr_multipliers: Mapping[str, float] | None = None,
        task: str = "classification",
        num_classes: int | None = None,
        seed: int | None = None,
        divergence_check_every: int = 10,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss
        self.optimizer_cfg = optimizer
        self.schedule_cfg = schedule
        self.regularization_cfg = regularization
        self.lr_multipliers = lr_multipliers
        self.task = task
        self.seed = seed
        self.divergence_check_every = max(1, divergence_check_every)
        self.penalty = build_penalty(self.model, regularization) if regularization is not None else None
        self.val_acc = (
            torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
            if task == "classification" and num_classes
            else None
        )
        self.diverged = False
        self._nonfinite: Tensor | None = None
        self._lr_names: list[str] | None = None

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_optimizers(
            self,
            optimizer=self.optimizer_cfg,
            schedule=self.schedule_cfg,
            regularization=self.regularization_cfg,
            lr_multipliers=self.lr_multipliers,
            model=self.model,
        )

    def on_train_epoch_start(self) -> None:
        if self.seed is not None:
            torch.manual_seed(self.seed * 100_003 + self.current_epoch)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = self.loss_fn(self.model(x), y)
        self.log("train/loss", loss, prog_bar=True)
        if self.penalty:
            penalty = self.penalty()
            self.log("train/penalty", penalty)
            loss = loss + penalty
        self._watch_divergence(loss)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # once per optimizer step (not per accumulated batch), with the lr this step uses
        self._log_lr(optimizer)

    def _watch_divergence(self, loss: Tensor) -> None:
        bad = ~torch.isfinite(loss.detach())
        self._nonfinite = bad if self._nonfinite is None else self._nonfinite | bad
        if (self.global_step + 1) % self.divergence_check_every == 0 or loss.device.type == "cpu":
            if bool(self._nonfinite):
                self.diverged = True
                self.trainer.should_stop = True

    def _log_lr(self, optimizer: torch.optim.Optimizer) -> None:
        # Learning rates are Python floats already on the host: hand them straight to the loggers every
        # step instead of through self.log, whose per-step cost would rival a small model's step.
        loggers = self.loggers
        if not loggers:
            return
        groups = optimizer.param_groups
        if self._lr_names is None:
            names = [g.get("name", str(i)) for i, g in enumerate(groups)]
            self._lr_names = ["train/lr"] if len(groups) == 1 else [f"train/lr/{n}" for n in names]
        metrics = {name: g["lr"] for name, g in zip(self._lr_names, groups)}
        if len(groups) > 1:
            metrics["train/lr"] = groups[0]["lr"]
        for logger in loggers:
            logger.log_metrics(metrics, step=self.global_step)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        out = self.model(x)
        self.log("val/loss", self.loss_fn(out, y), prog_bar=True, sync_dist=True, batch_size=len(x))
        if self.val_acc is not None:
            self.val_acc(out, y)
            self.log("val/acc", self.val_acc, prog_bar=True, batch_size=len(x))
