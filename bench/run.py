"""Benchmarks of lightopt against plain PyTorch loops on the same data, in the same process.

    python bench/run.py [--small] [--gpu] [--out FILE]

Every figure is a ratio against a plain loop written in this file and run in the same process on the same
data, alternating rounds so the machine's noise cancels. Prints each case's figures as it finishes and
rewrites the JSON (one object per case, with its ``ratio`` and raw figures) after every case; a Markdown
table goes beside it at the end. A case measured in rounds whose ratios spread by more than 15 % of their
median is marked ``noisy``: the machine was too busy to judge it.

Cases:
- ``cpu_digits``: the default task (digits MLP, Adam, batch 64): lightopt's training steps per second over a
  plain loop using ``DataLoader`` over a ``TensorDataset``.
- ``cpu_digits_wandb``: the same lightopt run with ``logger=wandb`` (offline) over ``logger=none``: what
  tracking costs a small model.
- ``cpu_optimizer_step`` / ``gpu_optimizer_step`` (``--gpu``: 100 M parameters): the optimizer step alone
  of every optimizer in ``conf/optimizer``, built by lightopt with its defaults, against the memory-bandwidth
  bound (bytes each step must read and write per parameter over the best bandwidth of a device copy and an
  in-place add measured in the same run); ``ratio`` is AdamW's share of its bound.
- ``gpu_gpt`` / ``gpu_gpt_compiled`` (``--gpu``): GPT-2 small (124 M parameters, batch 16 x 1024 tokens,
  bf16-mixed, fused AdamW, warmup + cosine): lightopt's tokens/s over a plain loop (autocast, the same model
  and optimizer), eager and with ``torch.compile``, and the model FLOPs utilisation (MFU) of both against
  the GPU's dense bf16 peak. ``cpu_gpt`` runs the same code on a tiny GPT in float32.
- ``sweep_idle`` / ``sweep_idle_joblib``: the idle share of the slots of a sweep with ``n_jobs=2`` whose
  trials sleep 0.5 s or 4 s (``tests/apps/tiny``, no training), with the basic and the joblib launcher, beside
  the idle share the same trials would have with a batch barrier and no other overhead. Lower is better.
- ``cpu_start_up``: the wall time from launching a default run (``logger=none``; also ``wandb``, offline) to
  its first training step, phase by phase (``bench/start_up.py``), over ``python -c "import lightning.pytorch"``
  in the same rounds: what lightopt adds to the imports every Lightning script pays.
- ``sweeper_overhead``, ``sweeper_flat``, ``digits_trial_cost`` (``bench/sweep_costs.py``): what a trial costs
  besides its training: lightopt's sweeper over Hydra's basic one on the same jobs of a trivial app, the
  per-trial cost of the last trials of a long sweep over the first, and the share of a 20-trial digits sweep's
  wall time spent outside training and validation steps.
- ``cpu_sweep_parallel``: trials per minute of a digits sweep (``python train.py -m``) with two trials in
  flight (``hydra.sweeper.n_jobs=2``) over one at a time; ``gpu_sweep_parallel`` (with
  ``--gpu``) the same with every trial on the one GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from omegaconf import OmegaConf
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.rounds import spread  # noqa: E402
from bench.sweep_costs import (  # noqa: E402
    digits_trial_cost,
    sweep_idle,
    sweep_parallel,
    sweeper_flat,
    sweeper_overhead,
)
from lightopt.run.data import DigitsDataModule  # noqa: E402
from lightopt.run.models import MLP  # noqa: E402
from lightopt.run.module import LitModel  # noqa: E402

ADAM = OmegaConf.create({"_target_": "torch.optim.Adam", "lr": 3e-3})
COSINE = OmegaConf.create({"name": "cosine", "warmup": 0, "min_lr": 0.0, "total_steps": None})


class StepTimer(Callback):
    """Wall time from the first training batch to the end of training, and the steps taken."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not hasattr(self, "start"):
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self.seconds = time.perf_counter() - self.start
        self.steps = trainer.global_step


def lightopt_digits(epochs: int, out_dir: Path, logger: str = "csv") -> float:
    """Steps/s of lightopt's training path: LitModel, TensorBatches, lr logging, and ``logger``."""
    torch.manual_seed(0)
    dm = DigitsDataModule(batch_size=64)
    module = LitModel(MLP(64, 10), nn.CrossEntropyLoss(), ADAM, COSINE, task="classification", num_classes=10)
    timer = StepTimer()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, limit_val_batches=0, num_sanity_val_steps=0,
        logger=make_logger(logger, out_dir), log_every_n_steps=10,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[timer],
    )
    trainer.fit(module, datamodule=dm)
    if logger == "wandb":
        trainer.logger.experiment.finish()
    return timer.steps / timer.seconds


def make_logger(kind: str, out_dir: Path) -> Any:
    if kind == "csv":
        return L.pytorch.loggers.CSVLogger(out_dir, name="", version="")
    if kind == "wandb":
        from lightopt.run.tracking import wandb_logger

        return wandb_logger(out_dir, mode="offline", name="bench")
    return False


def plain_digits(epochs: int) -> float:
    """Steps/s of the textbook loop: DataLoader over a TensorDataset, Adam, cosine schedule."""
    torch.manual_seed(0)
    dm = DigitsDataModule(batch_size=64)
    dm.setup("fit")
    x, y = dm._splits[0], dm._splits[1]
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    model = MLP(64, 10)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader))
    loss_fn = nn.CrossEntropyLoss()
    steps, start = 0, time.perf_counter()
    for _ in range(epochs):
        for xb, yb in loader:
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            sched.step()
            steps += 1
    return steps / (time.perf_counter() - start)


def cpu_digits(small: bool, work: Path) -> dict[str, Any]:
    torch.set_num_threads(1)  # both loops alike; small models gain nothing from intra-op threads
    epochs, rounds = (2, 2) if small else (10, 5)
    lightopt_rates, plain_rates = [], []
    plain_digits(1)  # warm-up: first-call allocations and lazy imports
    for r in range(rounds):
        plain_rates.append(plain_digits(epochs))
        lightopt_rates.append(lightopt_digits(epochs, work / f"digits-{r}"))
    lo, pl = statistics.median(lightopt_rates), statistics.median(plain_rates)
    return {
        "ratio": round(lo / pl, 3),
        "lightopt_steps_per_s": round(lo, 1),
        "plain_steps_per_s": round(pl, 1),
        "rounds": rounds,
        "epochs_per_round": epochs,
        "target": ">= 1.0",
    } | spread([a / b for a, b in zip(lightopt_rates, plain_rates, strict=True)])


def cpu_digits_wandb(small: bool, work: Path) -> dict[str, Any]:
    torch.set_num_threads(1)
    epochs, rounds = (2, 1) if small else (10, 3)
    with_wandb, without = [], []
    for r in range(rounds):
        without.append(lightopt_digits(epochs, work / f"none-{r}", logger="none"))
        with_wandb.append(lightopt_digits(epochs, work / f"wandb-{r}", logger="wandb"))
    w, n = statistics.median(with_wandb), statistics.median(without)
    return {
        "ratio": round(w / n, 3),
        "lightopt_steps_per_s": round(w, 1),
        "plain_steps_per_s": round(n, 1),
        "measures": "lightopt with logger=wandb (offline) over lightopt with logger=none",
        "rounds": rounds,
        "epochs_per_round": epochs,
        "target": "close to 1.0 (baseline: logger=none)",
    } | spread([a / b for a, b in zip(with_wandb, without, strict=True)])


# dense bf16 tensor-core peak, FLOP/s, by device name (SXM parts; the PCIe H100 is lower)
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}
GPT2_SMALL = {"vocab_size": 50304, "block_size": 1024, "n_layer": 12, "n_head": 12, "n_embd": 768}
GPT_TINY = {"vocab_size": 256, "block_size": 64, "n_layer": 2, "n_head": 2, "n_embd": 64}


PHASES = ("torch", "lightning", "lightopt", "compose", "build", "first_step")


def start_up_once(logger: str, work: Path) -> dict[str, float]:
    """Seconds from launching ``bench/start_up.py`` to the end of each of its phases, and to the first step."""
    work.mkdir(parents=True, exist_ok=True)
    launched = time.time()
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "start_up.py"), logger, str(work)], cwd=work,
                         capture_output=True, text=True, check=True, timeout=300)
    marks = json.loads(out.stdout.strip().splitlines()[-1])
    ends = [launched] + [marks[p] for p in PHASES]
    return {p: round(b - a, 3) for p, a, b in zip(PHASES, ends[:-1], ends[1:], strict=True)} | {
        "total": round(marks["first_step"] - launched, 3)}


def bare_import_once() -> float:
    """Seconds from launching ``python -c "import lightning.pytorch"`` to the end of that import (not of the
    process): what any Lightning script pays before its own code."""
    launched = time.time()
    out = subprocess.run([sys.executable, "-c", "import time, lightning.pytorch; print(time.time())"], check=True,
                         capture_output=True, text=True, timeout=300)
    return float(out.stdout.strip().splitlines()[-1]) - launched


def start_up(small: bool, work: Path) -> dict[str, Any]:
    """Launch to first training step of a default run (``logger=none``; and ``wandb`` offline) over the bare
    import of Lightning, in alternating rounds."""
    rounds = 1 if small else 3
    runs, bare, wandb_runs = [], [], []
    for r in range(rounds):
        bare.append(bare_import_once())
        runs.append(start_up_once("none", work / f"start-up-{r}"))
        if not small:
            wandb_runs.append(start_up_once("wandb", work / f"start-up-wandb-{r}"))
    total = statistics.median(r["total"] for r in runs)
    phases = {p: round(statistics.median(r[p] for r in runs), 3) for p in PHASES}
    result = {
        "ratio": round(total / statistics.median(bare), 3),
        "seconds_to_first_step": round(total, 3),
        "bare_lightning_import_s": round(statistics.median(bare), 3),
        "phases_s": phases,
        "imports_share": round((phases["torch"] + phases["lightning"] + phases["lightopt"]) / total, 3),
        "rounds": rounds,
        "target": "<= 3 s to the first step; the ratio is over `import lightning.pytorch` alone",
    } | spread([r["total"] / b for r, b in zip(runs, bare, strict=True)])
    if wandb_runs:
        result["seconds_to_first_step_wandb"] = round(statistics.median(r["total"] for r in wandb_runs), 3)
    return result


def gpt_flops_per_token(model: nn.Module, cfg: dict[str, int]) -> float:
    """Training FLOPs per token, 6 N + 12 L T C: 6 per parameter (position embedding excluded), plus attention."""
    n = sum(p.numel() for p in model.parameters()) - model.wpe.weight.numel()
    return 6 * n + 12 * cfg["n_layer"] * cfg["block_size"] * cfg["n_embd"]


def token_batches(cfg: dict[str, int], batch: int, count: int, device: torch.device) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, cfg["vocab_size"], (count, batch, cfg["block_size"] + 1), generator=g)
    return [(w[:, :-1].to(device), w[:, 1:].to(device)) for w in data]


def next_token_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy over every position of a batch of sequences (the plain loops' loss)."""
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def plain_gpt(cfg: dict[str, int], batches: list, steps: int, device: torch.device, compiled: bool) -> float:
    """Tokens/s of a plain loop: autocast bf16 on CUDA, fused AdamW, cosine, the same model."""
    from lightopt.run.models import GPT

    torch.manual_seed(0)
    model = GPT(**cfg).to(device)
    if compiled:
        model.compile()
    opt = torch.optim.AdamW(model.parameters(), lr=6e-4, weight_decay=0.1, fused=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    cuda = device.type == "cuda"
    warm = min(3, steps // 2)
    for i in range(steps):
        if i == warm:  # after compilation and allocator warm-up
            torch.cuda.synchronize() if cuda else None
            start = time.perf_counter()
        x, y = batches[i % len(batches)]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = next_token_loss(model(x), y)
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize() if cuda else None
    return (steps - warm) * x.numel() / (time.perf_counter() - start)


class Cycle:
    """``steps`` batches cycling through ``batches``: one epoch of a loader (a list would be several loaders)."""

    def __init__(self, batches: list, steps: int) -> None:
        self.batches, self.steps = batches, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return (self.batches[i % len(self.batches)] for i in range(self.steps))


class TokenTimer(Callback):
    """Tokens/s of training from the ``warm``-th step on."""

    def __init__(self, warm: int) -> None:
        self.warm = warm

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warm and not hasattr(self, "start"):
            torch.cuda.synchronize() if pl_module.device.type == "cuda" else None
            self.start, self.tokens = time.perf_counter(), batch[0].numel()

    def on_train_end(self, trainer, pl_module) -> None:
        torch.cuda.synchronize() if pl_module.device.type == "cuda" else None
        self.tokens_per_s = (trainer.global_step - self.warm) * self.tokens / (time.perf_counter() - self.start)


def lightopt_gpt(cfg: dict[str, int], batches: list, steps: int, device: torch.device, compiled: bool) -> float:
    """Tokens/s of lightopt's path: LitModel (language modeling), its AdamW + schedule, Lightning's loop."""
    from lightopt.run.models import GPT
    from lightopt.run.speed import configure

    torch.manual_seed(0)
    model = GPT(**cfg)
    trainer_cfg = configure(OmegaConf.create({"accelerator": "gpu" if device.type == "cuda" else "cpu",
                                              "precision": "auto", "compile": compiled}), model)
    optimizer = OmegaConf.create({"_target_": "torch.optim.AdamW", "lr": 6e-4})
    schedule = OmegaConf.create({"name": "cosine", "warmup": 0, "min_lr": 0.0, "total_steps": None})
    module = LitModel(model, nn.CrossEntropyLoss(), optimizer, schedule,
                      regularization={"weight_decay": 0.1}, task="language_modeling")
    return fit_tokens_per_s(module, batches, steps, **OmegaConf.to_container(trainer_cfg))


def fit_tokens_per_s(module: L.LightningModule, batches: list, steps: int, **trainer_kwargs: Any) -> float:
    """Tokens/s of ``steps`` training steps of ``module`` in Lightning's loop (no logging, checkpoints, validation)."""
    timer = TokenTimer(min(3, steps // 2))
    trainer = L.Trainer(devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[timer], **trainer_kwargs)
    trainer.fit(module, train_dataloaders=Cycle(batches, steps))
    return timer.tokens_per_s


class BareGPT(L.LightningModule):
    """The least a LightningModule can be for the plain loop's training: no lightopt, for what Lightning costs."""

    def __init__(self, cfg: dict[str, int], steps: int) -> None:
        super().__init__()
        from lightopt.run.models import GPT

        torch.manual_seed(0)
        self.model, self.steps = GPT(**cfg), steps

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        return next_token_loss(self.model(x), y)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(self.parameters(), lr=6e-4, weight_decay=0.1, fused=True)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def lightning_gpt(cfg: dict[str, int], batches: list, steps: int, device: torch.device) -> float:
    """Tokens/s of :class:`BareGPT` in Lightning's loop (eager, float32 on the CPU, bf16 autocast on CUDA)."""
    cuda = device.type == "cuda"
    return fit_tokens_per_s(BareGPT(cfg, steps), batches, steps, accelerator="gpu" if cuda else "cpu",
                            precision="bf16-mixed" if cuda else "32-true")


def gpt_case(device: torch.device, small: bool, compiled: bool) -> dict[str, Any]:
    from lightopt.run.models import GPT

    cfg = GPT_TINY if device.type == "cpu" else GPT2_SMALL
    if device.type == "cpu":  # tiny steps of a few ms: more of them, so that the machine's noise averages out
        batch, steps, rounds = (8, 8, 1) if small else (8, 40, 5)
    else:
        batch, steps, rounds = (16, 10, 1) if small else (16, 40, 3)
    batches = token_batches(cfg, batch, 4, device)
    ours, plain, bare = [], [], []
    for _ in range(rounds):
        plain.append(plain_gpt(cfg, batches, steps, device, compiled))
        ours.append(lightopt_gpt(cfg, batches, steps, device, compiled))
        if not compiled:
            bare.append(lightning_gpt(cfg, batches, steps, device))
    lo, pl = statistics.median(ours), statistics.median(plain)
    flops = gpt_flops_per_token(GPT(**cfg), cfg)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else ""
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    out = {
        "ratio": round(lo / pl, 3),
        "lightopt_tokens_per_s": round(lo),
        "plain_tokens_per_s": round(pl),
        "params": sum(p.numel() for p in GPT(**cfg).parameters()),
        "batch": [batch, cfg["block_size"]],
        "compiled": compiled,
        "target": ">= 0.98; MFU >= 0.45",
    } | spread([a / b for a, b in zip(ours, plain, strict=True)])
    if bare:  # what Lightning's loop costs by itself, and lightopt over it
        out["lightning_tokens_per_s"] = round(statistics.median(bare))
        out["ratio_over_lightning"] = round(lo / statistics.median(bare), 3)
    if peak:
        out["lightopt_mfu"] = round(lo * flops / peak, 3)
        out["plain_mfu"] = round(pl * flops / peak, 3)
    return out


# Bytes per parameter an optimizer step must move in float32: the parameter and its gradient are read, the
# parameter written, and each state tensor read and written (AdamW: p, g, m, v read + p, m, v written = 28).
STEP_BYTES = {
    "sgd": 12, "momentum": 20, "nesterov": 20, "rmsprop": 20, "adagrad": 20, "adam": 28, "adamw": 28,
    "adamax": 28, "nadam": 28, "radam": 28, "adadelta": 28,
    # factored second moment: rows + columns only; Muon's Newton-Schulz iterations are matmuls (compute-bound)
    "adafactor": 12, "muon": 20,
}


def stream_bandwidth(device: torch.device, nbytes: int) -> tuple[float, float]:
    """Bytes per second of two streaming kernels over ``nbytes`` tensors: a device copy (reads and writes
    ``nbytes``) and an in-place add (reads two, writes one: the pattern of an optimizer's in-place update).
    On a CPU the copy also reads its destination before writing it, so the add shows more of the bandwidth."""
    x = torch.rand(nbytes // 4, device=device)
    y, dst = torch.rand_like(x), torch.empty_like(x)
    copy = 2 * nbytes / timed(lambda: dst.copy_(x), device, repeat=10)
    add = 3 * nbytes / timed(lambda: x.add_(y), device, repeat=10)
    return copy, add


def timed(fn: Any, device: torch.device, repeat: int, warmup: int = 3) -> float:
    """Fastest seconds of ``fn()`` on ``device`` over ``repeat`` calls: for memory-bound kernels compared
    with a bound, the run least disturbed by the machine's other work."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return min(times)


def step_path(opt: torch.optim.Optimizer) -> str:
    """The implementation a step of ``opt`` runs: ``fused`` (one kernel for all tensors and ops), ``foreach``
    (one kernel per op over all tensors: torch's choice on CUDA when ``foreach`` is left unset) or
    ``for-loop`` (per tensor and op)."""
    from torch.optim.optimizer import _default_to_fused_or_foreach

    group = opt.param_groups[0]
    if group.get("fused"):
        return "fused"
    foreach = group.get("foreach")
    if foreach is None and "foreach" in group:
        foreach = _default_to_fused_or_foreach(list(group["params"]), bool(group.get("differentiable")))[1]
    return "foreach" if foreach else "for-loop"


def optimizer_step(device: torch.device, n_params: int, repeat: int) -> dict[str, Any]:
    """Each optimizer's step time on ``n_params`` parameters against its memory-bandwidth bound."""
    from lightopt.core.optimizers import create_optimizer

    width = 2048 if n_params >= 2048 * 2048 * 4 else 512
    layers = max(1, round(n_params / (width * width)))
    model = nn.Sequential(*[nn.Linear(width, width, bias=False) for _ in range(layers)]).to(device)
    n = sum(p.numel() for p in model.parameters())
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)  # a step of this size uses every core, as in training
    figures, seconds, bandwidths = {}, {}, []
    for name in STEP_BYTES:
        cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "optimizer" / f"{name}.yaml"))
        opt = create_optimizer(model, cfg)
        for p in model.parameters():
            p.grad = torch.randn_like(p)
        # measured next to each step, so that a slower spell of the machine hits both; the best of all is
        # the bandwidth: at least 256 MiB, streaming through memory rather than a CPU's caches
        bandwidths.append(stream_bandwidth(device, max(4 * n, 2**28)))
        seconds[name] = timed(opt.step, device, repeat)
        figures[name] = {"ms": round(1e3 * seconds[name], 3), "path": step_path(opt)}
        del opt
    copy, add = (max(b[i] for b in bandwidths) for i in (0, 1))
    bandwidth = max(copy, add)
    for name, figure in figures.items():
        figure["share_of_bound"] = round(STEP_BYTES[name] * n / bandwidth / seconds[name], 3)
    adamw = figures["adamw"]
    return {
        "ratio": adamw["share_of_bound"],
        "adamw_ms_per_step": adamw["ms"],
        "bound_ms_per_step": round(1e3 * STEP_BYTES["adamw"] * n / bandwidth, 3),
        "measures": "AdamW step time over its bound (28 bytes/param at the best measured streaming bandwidth)",
        "params": n,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "copy_bandwidth_GB_s": round(copy / 1e9, 1),
        "inplace_add_bandwidth_GB_s": round(add / 1e9, 1),
        "optimizers": figures,
        "target": "AdamW >= 0.85 on GPU",
    }


def environment() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def markdown_row(name: str, r: dict[str, Any]) -> str:
    # the first two rates of a case: lightopt's (or the variant measured), then the baseline's; a case of
    # durations (cpu_start_up) shows its seconds instead
    rates = [(k, v) for k, v in r.items() if "_per_" in k][:2]
    if len(rates) == 2:
        (k1, lo), (_, pl) = rates
        unit = k1.split("_", 1)[1].replace("_", " ")
    else:
        lo, pl, unit = r["seconds_to_first_step"], r["bare_lightning_import_s"], "s"
    ratio = f"{r['ratio']} (noisy: rounds spread {r['spread']:.0%})" if r.get("noisy") else r["ratio"]
    return f"| {name} | {ratio} | {lo} {unit} | {pl} {unit} | {r.get('target', '')} |"


def markdown(results: dict[str, Any]) -> str:
    lines = ["| case | ratio | lightopt | baseline | target |", "| --- | --- | --- | --- | --- |"]
    for name, r in results["cases"].items():
        lines.append(markdown_row(name, r))
    env = results["environment"]
    lines.append("")
    lines.append(f"torch {env['torch']}, lightning {env['lightning']}, Python {env['python']}, "
                 f"{env['cpus']} CPUs{', ' + env['cuda'] if env['cuda'] else ''}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="a quick run that only checks the cases work")
    parser.add_argument("--gpu", action="store_true", help="also run the GPU cases (needs CUDA)")
    parser.add_argument("--out", type=Path, default=Path("bench/results.json"), help="JSON output path")
    parser.add_argument("--only", default="", help="comma-separated case names to run (default: all)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    work = args.out.parent / "bench-work"
    work.mkdir(parents=True, exist_ok=True)
    if args.gpu and not torch.cuda.is_available():
        parser.error("--gpu needs a CUDA device")
    plan = {"cpu_digits": lambda: cpu_digits(args.small, work),
            "cpu_digits_wandb": lambda: cpu_digits_wandb(args.small, work),
            "cpu_optimizer_step": lambda: optimizer_step(torch.device("cpu"), 2**20 if args.small else 2**24,
                                                         3 if args.small else 10),
            "cpu_gpt": lambda: gpt_case(torch.device("cpu"), args.small, compiled=False),
            "cpu_sweep_parallel": lambda: sweep_parallel(args.small, work),
            "sweep_idle": lambda: sweep_idle(args.small, work),
            "sweep_idle_joblib": lambda: sweep_idle(args.small, work, "joblib"),
            "cpu_start_up": lambda: start_up(args.small, work),
            "sweeper_overhead": lambda: sweeper_overhead(args.small, work),
            "sweeper_flat": lambda: sweeper_flat(args.small, work),
            "digits_trial_cost": lambda: digits_trial_cost(args.small, work)}
    if args.gpu:
        plan |= {"gpu_gpt": lambda: gpt_case(torch.device("cuda"), args.small, compiled=False),
                 "gpu_gpt_compiled": lambda: gpt_case(torch.device("cuda"), args.small, compiled=True),
                 "gpu_optimizer_step": lambda: optimizer_step(torch.device("cuda"), 10**7 if args.small else 10**8,
                                                              20),
                 "gpu_sweep_parallel": lambda: sweep_parallel(args.small, work, accelerator="gpu")}
    if args.only:
        unknown = sorted(set(args.only.split(",")) - set(plan))
        if unknown:
            parser.error(f"--only: unknown case(s) {', '.join(unknown)}; the cases are {', '.join(plan)}")
        plan = {name: measure for name, measure in plan.items() if name in args.only.split(",")}
    cases: dict[str, Any] = {}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for k, (name, measure) in enumerate(plan.items(), start=1):
        print(f"[{k}/{len(plan)}] {name} ...", flush=True)
        start = time.perf_counter()
        cases[name] = measure()
        print(f"[{k}/{len(plan)}] {markdown_row(name, cases[name])} ({time.perf_counter() - start:.0f} s)", flush=True)
        # written after every case: a run stopped half-way keeps what it measured
        args.out.write_text(json.dumps(cases | {"environment": environment()}, indent=2) + "\n")
    results = {"cases": cases, "environment": environment(), "small": args.small}
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
