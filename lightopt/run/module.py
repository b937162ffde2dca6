"""The LightningModule that ``train.py`` trains: any ``nn.Module`` plus a loss, optimized by lightopt's core.

What it logs is listed in the README (``metrics.csv``); building the optimizer and schedule is delegated to
:func:`lightopt.core.plugin.configure_optimizers`, the run's bookkeeping lives in :mod:`lightopt.run.training`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
import torchmetrics
from torch import Tensor, nn

from lightopt.core.plugin import configure_optimizers
from lightopt.core.regularization import build_penalty
from lightopt.run.tracking import is_wandb


class WeightedMean(torchmetrics.Metric):
    """``sum(w * x) / sum(w)`` over an epoch's updates, its two sums synced across DDP ranks.

    Unlike torchmetrics' ``MeanMetric`` it never reads values on the host to look for NaN (a device sync
    per batch on a GPU; a NaN loss must show, not be dropped), and keeps the weights, which ``MeanMetric``
    drops when that check is disabled.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("weight", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, value: Tensor, weight: float) -> None:
        self.total += value.detach().float() * weight
        self.weight += weight

    def compute(self) -> Tensor:
        return self.total / self.weight


class MeanPerplexity(WeightedMean):
    """``exp`` of the weighted mean of the per-token losses it is given: perplexity, synced across ranks."""

    def compute(self) -> Tensor:
        return super().compute().exp()


class LitModel(L.LightningModule):
    """Supervised training of ``model`` under ``loss``.

    Args:
        model: the network.
        loss: the criterion, ``loss(model(x), y)``.
        optimizer, schedule, regularization, lr_multipliers, lr_layer_decay: lightopt config sections.
        task: ``"classification"`` (adds accuracy), ``"regression"`` or ``"language_modeling"`` (the model
            maps ``(B, T)`` token ids to ``(B, T, V)`` logits, the loss takes them flattened to ``(B*T, V)``
            and ``(B*T,)``; adds next-token accuracy ``val/acc`` and perplexity ``val/ppl``).
        num_classes: number of classes for accuracy.
        seed: when set, the global RNG is reseeded from ``(seed, epoch)`` at each epoch start, so dropout
            masks, like the data order, do not depend on whether the run was resumed.
        divergence_check_every: optimizer steps between checks of the loss for NaN/inf off the CPU. A check
            reads the loss on the host, a device sync on GPU, so there it is not done every step.
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
        lr_layer_decay: float | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss
        self.optimizer_cfg = optimizer
        self.schedule_cfg = schedule
        self.regularization_cfg = regularization
        self.lr_multipliers = lr_multipliers
        self.lr_layer_decay = lr_layer_decay
        self.task = task
        self.seed = seed
        self.divergence_check_every = max(1, divergence_check_every)
        self.penalty = build_penalty(self.model, regularization) if regularization is not None else None
        self.sequence = task == "language_modeling"
        self.val_acc: torchmetrics.Metric | None = (
            torchmetrics.Accuracy(task="multiclass", num_classes=num_classes)
            if task == "classification" and num_classes
            else None
        )
        # A metric of weighted sums, synced as floats: the reduced val/loss is that of the whole validation set
        # even when the ranks hold different numbers of rows (Lightning's own sync_dist mean then floors the
        # summed batch sizes).
        self.val_loss = WeightedMean()
        self.val_ppl: MeanPerplexity | None = None
        if self.sequence:
            # mean of (prediction == target) over all tokens; no (V,)-sized state, whatever the vocabulary
            self.val_acc = WeightedMean()
            self.val_ppl = MeanPerplexity()
        self.diverged = False
        # sums of (loss, penalty) since the last write to the loggers (on the device, or host floats for a
        # CPU run), and their count
        self._sums: Tensor | list[float] | None = None
        self._train_loss_read: bool | None = None
        self._count = 0
        self._written_at = -1
        self._lr_names: list[str] | None = None
        self._last_lr: dict[str, float] = {}

    # Lightning sets _current_fx_name twice per hook call, about 50 times per training step, and this module
    # keeps its running sums in attributes: through nn.Module.__setattr__'s parameter/module/buffer checks
    # that costs about a tenth of a small model's step. These names are never parameters, modules or
    # buffers, so they are stored directly.
    _PLAIN_ATTRIBUTES = frozenset({"_current_fx_name", "_sums", "_count", "_last_lr", "_written_at"})

    def __setattr__(self, name: str, value: Any) -> None:
        if name in LitModel._PLAIN_ATTRIBUTES:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def configure_optimizers(self) -> dict[str, Any]:
        return configure_optimizers(
            self,
            optimizer=self.optimizer_cfg,
            schedule=self.schedule_cfg,
            regularization=self.regularization_cfg,
            lr_multipliers=self.lr_multipliers,
            lr_layer_decay=self.lr_layer_decay,
            model=self.model,
        )

    def on_train_epoch_start(self) -> None:
        if self.seed is not None:
            torch.manual_seed(self.seed * 100_003 + self.current_epoch)

    def _flat(self, out: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Language modeling: ``(B, T, V)`` logits and ``(B, T)`` targets as ``(B*T, V)`` and ``(B*T,)``."""
        if self.sequence:
            return out.reshape(-1, out.shape[-1]), y.reshape(-1)
        return out, y

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = self.loss_fn(*self._flat(self.model(x), y))
        penalty = self.penalty() if self.penalty else None
        total = loss if penalty is None else loss + penalty
        # No self.log here: its per-call bookkeeping costs about as much as a small model's whole step.
        # Sum on the device instead and read the sums once per logging interval; on the CPU reading a
        # scalar costs nothing, so Python floats are summed and no tensor op is added to the step.
        if loss.device.type == "cpu":
            lv, pv = float(loss.detach()), (float(penalty.detach()) if penalty is not None else 0.0)
            self._sums = [lv, pv] if self._sums is None else [self._sums[0] + lv, self._sums[1] + pv]
        else:
            pair = torch.stack([loss.detach(), total.detach() - loss.detach()]).float()
            self._sums = pair if self._sums is None else self._sums + pair
        self._count += 1
        return total

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # once per optimizer step (not per accumulated batch), with the lr this step uses
        self._log_lr(optimizer)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._sums is None:
            return
        step = self.global_step
        on_cpu = not isinstance(self._sums, Tensor)
        if step % self.trainer.log_every_n_steps == 0 and step != self._written_at:
            self._written_at = step
            self._write_train_metrics()
        elif on_cpu or step % self.divergence_check_every == 0:
            self._check_finite(float(self._sums[0]))

    def on_train_epoch_end(self) -> None:
        self._write_train_metrics()

    def _check_finite(self, loss_sum: float) -> None:
        if not math.isfinite(loss_sum):
            self.diverged = True
            self.trainer.should_stop = True

    def _write_train_metrics(self) -> None:
        if self._sums is None or not self._count:
            return
        # the one host sync per logging interval (host floats already on the CPU)
        loss_sum, penalty_sum = self._sums.tolist() if isinstance(self._sums, Tensor) else self._sums
        self._check_finite(loss_sum)
        metrics = {"train/loss": loss_sum / self._count}
        if self.penalty:
            metrics["train/penalty"] = penalty_sum / self._count
        self._sums, self._count = None, 0
        if self._train_loss_read is None:
            self._train_loss_read = self._train_loss_is_read()
        if self._train_loss_read:
            self.log("train/loss", metrics["train/loss"], prog_bar=True, logger=False)
        step = max(self.global_step - 1, 0)
        for logger in self.loggers:
            logger.log_metrics({**self._last_lr, **metrics} if is_wandb(logger) else metrics, step=step)

    @property
    def last_lr(self) -> float | None:
        """The learning rate of the first param group at the last optimizer step (``None`` before any)."""
        return self._last_lr.get("train/lr")

    def _train_loss_is_read(self) -> bool:
        """Whether anything reads ``train/loss`` from the trainer: a progress bar, or a schedule, checkpoint,
        early-stopping or objective monitoring a ``train/`` metric. Only then is it passed through
        ``self.log``, which costs about a millisecond per call."""
        trainer = self.trainer
        names = {(self.schedule_cfg or {}).get("monitor")}
        names |= {getattr(cb, attr, None) for cb in trainer.callbacks for attr in ("monitor", "objective")}
        return trainer.progress_bar_callback is not None or any(
            isinstance(n, str) and n.startswith("train/") for n in names)

    def _log_lr(self, optimizer: torch.optim.Optimizer) -> None:
        # Learning rates are Python floats already on the host: hand them straight to the loggers every
        # step instead of through self.log, whose per-step cost would rival a small model's step. W&B
        # costs about a millisecond per call, so it gets them with the train metrics once per interval.
        groups = optimizer.param_groups
        if self._lr_names is None:
            names = [g.get("name", str(i)) for i, g in enumerate(groups)]
            self._lr_names = ["train/lr"] if len(groups) == 1 else [f"train/lr/{n}" for n in names]
        metrics = {name: g["lr"] for name, g in zip(self._lr_names, groups, strict=True)}
        if len(groups) > 1:
            metrics["train/lr"] = groups[0]["lr"]
        self._last_lr = metrics
        for logger in self.loggers:
            if not is_wandb(logger):
                logger.log_metrics(metrics, step=self.global_step)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        out, y = self._flat(self.model(x), y)
        loss = self.loss_fn(out, y)
        self.val_loss.update(loss, weight=y.numel())  # the elements the (mean-reduced) loss averaged over
        self.log("val/loss", self.val_loss, prog_bar=True, batch_size=len(x))
        if self.sequence:
            assert self.val_acc is not None and self.val_ppl is not None
            self.val_acc.update((out.argmax(-1) == y).float().mean(), weight=y.numel())
            self.val_ppl.update(loss, weight=y.numel())
            self.log("val/acc", self.val_acc, prog_bar=True, batch_size=len(x))
            self.log("val/ppl", self.val_ppl, batch_size=len(x))
        elif self.val_acc is not None:
            self.val_acc(out, y)
            self.log("val/acc", self.val_acc, prog_bar=True, batch_size=len(x))
