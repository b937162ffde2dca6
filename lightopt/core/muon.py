"""``MuonAdamW``: Muon for hidden weight matrices and AdamW for everything else, as one optimizer.

Muon (``torch.optim.Muon``) replaces each 2-D update by an approximately orthogonal matrix (Newton-Schulz
iteration on the momentum), which only makes sense for the weight matrices of hidden layers; embeddings,
the output head, biases, norm gains and conv kernels are trained with AdamW. Wrapping both in one
``torch.optim.Optimizer`` lets Lightning, checkpoints and LR schedulers (which scale
``param_groups[i]["lr"]``) treat the pair as a single optimizer. Which parameters go where is decided in
:mod:`lightopt.core.optimizers` (``param_groups(..., split_muon=True)``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import AdamW, Muon, Optimizer

__all__ = ["MuonAdamW"]

_ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


def _tensor(p: Any) -> Tensor:
    # params may be given as (name, tensor) pairs
    return p[1] if isinstance(p, tuple) else p


def _check_hyperparameters(
    lr: float,
    weight_decay: float,
    momentum: float,
    ns_steps: int,
    ns_coefficients: Sequence[float],
    adjust_lr_fn: str | None,
    adamw_betas: Sequence[float],
    adamw_eps: float,
    muon_eps: float,
    adamw_lr_ratio: float,
) -> None:
    """``ValueError`` (as torch's optimizers raise) for a constructor argument of :class:`MuonAdamW` out of range."""
    if not lr >= 0.0:
        raise ValueError(f"Invalid learning rate: {lr}")
    if not weight_decay >= 0.0:
        raise ValueError(f"Invalid weight_decay: {weight_decay}")
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"Invalid momentum (allowed: 0 <= momentum < 1): {momentum}")
    if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or not 1 <= ns_steps < 100:
        raise ValueError(f"Invalid ns_steps (allowed: an integer in [1, 99]): {ns_steps}")
    if len(ns_coefficients) != 3:
        raise ValueError(f"Invalid ns_coefficients (allowed: three numbers a, b, c): {ns_coefficients}")
    if adjust_lr_fn not in _ADJUST_LR_FNS:
        raise ValueError(f"Invalid adjust_lr_fn (allowed: {_ADJUST_LR_FNS}): {adjust_lr_fn!r}")
    if len(adamw_betas) != 2 or not all(0.0 <= b < 1.0 for b in adamw_betas):
        raise ValueError(f"Invalid adamw_betas (allowed: two numbers in [0, 1)): {adamw_betas}")
    if not adamw_eps >= 0.0 or not muon_eps >= 0.0:
        raise ValueError(f"Invalid epsilon: adamw_eps={adamw_eps}, muon_eps={muon_eps}")
    if not adamw_lr_ratio >= 0.0:
        raise ValueError(f"Invalid adamw_lr_ratio: {adamw_lr_ratio}")


class MuonAdamW(Optimizer):
    """Muon on groups with ``use_muon: True``, AdamW (decoupled weight decay) on the others.

    A group without a ``use_muon`` key is split in two: its exactly-2-D parameters go to Muon, the rest
    to AdamW (names suffixed ``/muon`` and ``/adamw``). Both halves read ``lr`` and ``weight_decay`` from
    their own groups, and weight decay is decoupled in both (``w -= lr * weight_decay * w``).

    With ``adjust_lr_fn="match_rms_adamw"`` Muon scales its step to ``0.2 * sqrt(max(rows, cols))``
    times ``lr``, which gives updates of the RMS AdamW typically makes, so one AdamW-like ``lr`` suits
    both halves. With ``"original"`` Muon wants a much larger ``lr`` (about 0.02): set
    ``adamw_lr_ratio`` (AdamW's lr = group lr * ratio) to bring AdamW back to its usual range.

    Args:
        params: parameters or param groups (optionally with ``use_muon``).
        lr: learning rate of both halves.
        weight_decay: decoupled weight decay coefficient.
        momentum: Muon's momentum (EMA factor of the gradient).
        nesterov: Nesterov-style momentum for Muon.
        ns_steps: Newton-Schulz iterations per Muon step.
        ns_coefficients: the quintic Newton-Schulz coefficients ``(a, b, c)``.
        muon_eps: Muon's guard against division by zero when normalizing the update.
        adjust_lr_fn: Muon's per-shape lr scaling: ``"match_rms_adamw"``, ``"original"`` or ``None``
            (= ``"original"``).
        adamw_betas: AdamW's ``(beta1, beta2)``.
        adamw_eps: AdamW's epsilon.
        adamw_lr_ratio: AdamW's lr as a multiple of its group's ``lr``.
        foreach, fused: implementation choice of the AdamW half (see ``torch.optim.AdamW``).
    """

    #: Tells :func:`lightopt.core.optimizers.create_optimizer` to mark groups with ``use_muon``.
    splits_hidden_matrices = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        ns_coefficients: Sequence[float] = (3.4445, -4.7750, 2.0315),
        muon_eps: float = 1e-7,
        adjust_lr_fn: str | None = "match_rms_adamw",
        adamw_betas: Sequence[float] = (0.9, 0.95),
        adamw_eps: float = 1e-8,
        adamw_lr_ratio: float = 1.0,
        foreach: bool | None = None,
        fused: bool | None = None,
    ) -> None:
        _check_hyperparameters(lr, weight_decay, momentum, ns_steps, ns_coefficients, adjust_lr_fn, adamw_betas,
                               adamw_eps, muon_eps, adamw_lr_ratio)
        # The two halves share key names with different meanings (eps), so each group gets the defaults
        # of its own half only; the base class fills in just lr and weight_decay.
        self._muon_defaults: dict[str, Any] = {
            "momentum": momentum,
            "nesterov": nesterov,
            "ns_steps": ns_steps,
            "ns_coefficients": tuple(ns_coefficients),
            "eps": muon_eps,
            "adjust_lr_fn": adjust_lr_fn,
        }
        self._adamw_defaults: dict[str, Any] = {
            "betas": tuple(adamw_betas),
            "eps": adamw_eps,
            "adamw_lr_ratio": adamw_lr_ratio,
            "amsgrad": False,
            "maximize": False,
            "foreach": foreach,
            "capturable": False,
            "differentiable": False,
            "fused": fused,
            "decoupled_weight_decay": True,
        }
        self._muon: Muon | None = None
        self._adamw: AdamW | None = None
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})
        self._sync()

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group; without ``use_muon`` it is split into its 2-D (Muon) and other (AdamW) params."""
        raw = param_group["params"]
        if isinstance(raw, set):
            raise TypeError("optimizer parameters must be an ordered collection (a list), not a set")
        items = [raw] if isinstance(raw, Tensor) else list(raw)  # a generator can be read only once
        if "use_muon" in param_group:
            param_group["params"] = items
            parts = [(param_group, bool(param_group["use_muon"]))]
        else:
            two_d = [p for p in items if _tensor(p).ndim == 2]
            other = [p for p in items if _tensor(p).ndim != 2]
            parts = []
            for chosen, use_muon in ((two_d, True), (other, False)):
                if chosen or (not two_d and not other):
                    g = {**param_group, "params": chosen}
                    if "name" in g and two_d and other:
                        g["name"] = f"{g['name']}/{'muon' if use_muon else 'adamw'}"
                    parts.append((g, use_muon))
        for group, use_muon in parts:
            group["use_muon"] = use_muon
            if use_muon:
                bad = [tuple(_tensor(p).shape) for p in group["params"] if _tensor(p).ndim != 2]
                if bad:
                    raise ValueError(f"Muon takes only 2-D parameters; a use_muon group has shapes {bad}")
            for key, value in (self._muon_defaults if use_muon else self._adamw_defaults).items():
                group.setdefault(key, value)
            super().add_param_group(group)
        if getattr(self, "_muon", None) is not None or getattr(self, "_adamw", None) is not None:
            self._sync()

    def _sync(self) -> tuple[Muon | None, AdamW | None]:
        """Point the inner optimizers at the current groups and state (they change on load_state_dict)."""
        muon_groups = [g for g in self.param_groups if g["use_muon"]]
        adamw_groups = [g for g in self.param_groups if not g["use_muon"]]
        muon = getattr(self, "_muon", None)
        adamw = getattr(self, "_adamw", None)
        lr, wd = self.defaults["lr"], self.defaults["weight_decay"]
        if muon_groups:
            if muon is None:
                d = self._muon_defaults
                muon = self._muon = Muon(
                    muon_groups,
                    lr=lr,
                    weight_decay=wd,
                    momentum=d["momentum"],
                    nesterov=d["nesterov"],
                    ns_coefficients=d["ns_coefficients"],
                    eps=d["eps"],
                    ns_steps=d["ns_steps"],
                    adjust_lr_fn=d["adjust_lr_fn"],
                )
            muon.param_groups = muon_groups
            muon.state = self.state
        if adamw_groups:
            if adamw is None:
                d = self._adamw_defaults
                adamw = self._adamw = AdamW(
                    adamw_groups,
                    lr=lr,
                    betas=d["betas"],
                    eps=d["eps"],
                    weight_decay=wd,
                    foreach=d["foreach"],
                    fused=d["fused"],
                )
            adamw.param_groups = adamw_groups
            adamw.state = self.state
        return (muon if muon_groups else None), (adamw if adamw_groups else None)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        """One step of both halves; ``closure`` (re-evaluating the loss) is called once, before."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        muon, adamw = self._sync()
        if muon is not None:
            muon.step()
        if adamw is not None:
            groups = adamw.param_groups
            if any(g["adamw_lr_ratio"] != 1.0 for g in groups):
                # scaled copies, so the lr that schedulers and loggers see is never touched
                adamw.param_groups = [{**g, "lr": g["lr"] * g["adamw_lr_ratio"]} for g in groups]
            try:
                adamw.step()
            finally:
                adamw.param_groups = groups
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load hyperparameters and state, keeping this optimizer's Muon/AdamW split of the parameters."""
        split = [g["use_muon"] for g in self.param_groups]
        super().load_state_dict(state_dict)
        for group, use_muon in zip(self.param_groups, split, strict=True):
            group["use_muon"] = use_muon
            for key, value in (self._muon_defaults if use_muon else self._adamw_defaults).items():
                group.setdefault(key, value)
        self._sync()

    def __getstate__(self) -> dict[str, Any]:
        # the base class pickles only defaults/state/param_groups; the inner optimizers are rebuilt lazily
        state = super().__getstate__()
        state["_muon_defaults"] = self._muon_defaults
        state["_adamw_defaults"] = self._adamw_defaults
        return state
