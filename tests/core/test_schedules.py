"""Learning-rate schedules: every schedule against its closed form, plateau logic, resume, config checks.

Expected values are written out here from the formulas (t = optimizer steps taken, W = warmup steps,
T = total steps, s = min(t - W, T - W), Tm = T - W); the module under test is only driven, never asked for
its own formulas.
"""

from __future__ import annotations

import io
import math
import sys
import types

import pytest
import torch
from omegaconf import OmegaConf

from lightopt.core.schedules import SCHEDULES, PlateauLR, ScheduledLR, create_scheduler, to_steps
from lightopt.errors import ConfigError
from tests.helpers import CONF as ROOT_CONF

CONF = ROOT_CONF / "schedule"
LR0 = 0.1
T = 50


def make_optimizer(lr: float = LR0, mults: tuple[float, ...] = (1.0, 10.0)) -> torch.optim.SGD:
    """SGD over one tiny parameter per group; group i runs at lr * mults[i]."""
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr * m} for m in mults]
    return torch.optim.SGD(groups, lr=lr)


def drive(optimizer, scheduler, steps: int, observe: dict[int, float] | None = None) -> list[list[float]]:
    """The lrs of every group for optimizer steps 0..steps-1, stepping as a training loop does."""
    out = []
    for t in range(steps):
        out.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        if observe and t in observe:
            scheduler.observe(observe[t])
        scheduler.step()
    return out


def lrs_of(cfg: dict, total=T, steps: int = T + 5, lr: float = LR0, mults=(1.0, 10.0)) -> list[list[float]]:
    opt = make_optimizer(lr, mults)
    return drive(opt, create_scheduler(opt, cfg, total), steps)


def with_warmup(main, warmup: int, total: int = T, lr0: float = LR0):
    """lr(t): linear warmup to lr0 over `warmup` steps, then main(s, Tm) with s clamped to Tm."""

    def lr(t: int) -> float:
        if t < warmup:
            return lr0 * (t + 1) / warmup
        tm = total - warmup
        return main(min(t - warmup, tm), tm)

    return lr


def sgdr(s, c, mult, decay, lr0=LR0, min_lr=0.0, tm=T):
    """SGDR by walking the cycles one by one; at the horizon tm a restart is not taken."""
    start, length, peak = 0.0, float(c), lr0
    while s > start + length or (s == start + length and s < tm):
        start += length
        length *= mult
        peak *= decay
    peak = max(peak, min_lr)
    return min_lr + 0.5 * (peak - min_lr) * (1 + math.cos(math.pi * (s - start) / length))


def one_cycle(s, tm, pct=0.3, div=25.0, final_div=1e4, shape="cos", lr0=LR0):
    """As torch's OneCycleLR: the peak at step pct * tm - 1, the final lr at step tm - 1 (then held)."""
    peak, last = pct * tm - 1, tm - 1
    lo, end = lr0 / div, lr0 / div / final_div

    def go(a, b, x):
        return b + 0.5 * (a - b) * (1 + math.cos(math.pi * x)) if shape == "cos" else a + (b - a) * x

    return go(lo, LR0, s / peak) if s <= peak else go(LR0, end, min(1.0, (s - peak) / (last - peak)))


def wsd_lr(s, tm, d, final, shape):
    if s < tm - d:
        return LR0
    x = (s - (tm - d)) / d
    f = {"linear": 1 - x, "cosine": 0.5 * (1 + math.cos(math.pi * x)), "sqrt": 1 - math.sqrt(x)}[shape]
    return final + (LR0 - final) * f


# (config without name/warmup, expected main-schedule lr(s, Tm)); step counts given as fractions are of T=50
CASES = {
    "constant": ({"name": "constant"}, lambda s, tm: LR0),
    "exponential-rate": ({"name": "exponential", "decay_rate": 0.05}, lambda s, tm: LR0 * 0.95**s),
    "exponential-final": (
        {"name": "exponential", "lr_final": 1e-3},
        lambda s, tm: LR0 * (1 - (1 - (1e-3 / LR0) ** (1 / tm))) ** s,  # (1 - a)^s, a = 1 - (lr_T/lr0)^(1/Tm)
    ),
    "linear": ({"name": "linear", "lr_final": 0.01}, lambda s, tm: LR0 - s / tm * (LR0 - 0.01)),
    "step-int": ({"name": "step", "step_size": 7, "gamma": 0.5}, lambda s, tm: LR0 * 0.5 ** (s // 7)),
    "step-fraction": ({"name": "step", "step_size": 0.2}, lambda s, tm: LR0 * 0.1 ** (s // 10)),
    "multistep": (
        {"name": "multistep", "milestones": [0.5, 10], "gamma": 0.5},
        lambda s, tm: LR0 * 0.5 ** ((s >= 10) + (s >= 25)),
    ),
    "polynomial-sqrt": (
        {"name": "polynomial", "power": 0.5, "lr_final": 0.01},
        lambda s, tm: 0.01 + (LR0 - 0.01) * (1 - s / tm) ** 0.5,
    ),
    "polynomial-2": ({"name": "polynomial", "power": 2.0}, lambda s, tm: LR0 * (1 - s / tm) ** 2),
    "cosine": (
        {"name": "cosine", "min_lr": 0.01},
        lambda s, tm: 0.01 + 0.5 * (LR0 - 0.01) * (1 + math.cos(math.pi * s / tm)),
    ),
    "cosine_restarts-mult": (
        {"name": "cosine_restarts", "cycle_steps": 5, "cycle_mult": 2.0, "cycle_decay": 0.5},
        lambda s, tm: sgdr(s, 5, 2.0, 0.5),
    ),
    "cosine_restarts-fraction": (
        {"name": "cosine_restarts", "cycle_steps": 0.2, "min_lr": 0.01},
        lambda s, tm: sgdr(s, 10, 1.0, 1.0, min_lr=0.01),
    ),
    "onecycle-cos": ({"name": "onecycle"}, lambda s, tm: one_cycle(s, tm)),
    "onecycle-linear": (
        {"name": "onecycle", "pct_start": 0.4, "div_factor": 10.0, "final_div_factor": 100.0, "anneal": "linear"},
        lambda s, tm: one_cycle(s, tm, 0.4, 10.0, 100.0, "linear"),
    ),
    "inverse_sqrt": ({"name": "inverse_sqrt", "timescale": 10}, lambda s, tm: LR0 * math.sqrt(10 / (s + 10))),
    "wsd-linear": ({"name": "wsd", "decay": 0.2, "lr_final": 0.001}, lambda s, tm: wsd_lr(s, tm, 10, 0.001, "linear")),
    "wsd-cosine": ({"name": "wsd", "decay": 8, "decay_shape": "cosine"}, lambda s, tm: wsd_lr(s, tm, 8, 0.0, "cosine")),
    "wsd-sqrt": ({"name": "wsd", "decay": 0.3, "decay_shape": "sqrt"}, lambda s, tm: wsd_lr(s, tm, 15, 0.0, "sqrt")),
}


@pytest.mark.parametrize("warmup,warmup_steps", [(0, 0), (5, 5), (0.1, 5)], ids=["no-warmup", "warmup-5", "warmup-0.1"])
@pytest.mark.parametrize("case", list(CASES))
def test_schedule_matches_closed_form(case, warmup, warmup_steps):
    cfg, main = CASES[case]
    expected = with_warmup(main, warmup_steps)
    got = lrs_of({**cfg, "warmup": warmup})
    for t, (lr, lr_x10) in enumerate(got):  # start, middle, end and 5 steps past the end
        assert lr == pytest.approx(expected(t), rel=1e-9, abs=1e-15), t
        assert lr_x10 == pytest.approx(10 * lr, rel=1e-12), t  # the group multiplier is kept


def test_every_registered_schedule_has_a_case():
    assert {cfg["name"] for cfg, _ in CASES.values()} == set(SCHEDULES)


def test_warmup_rises_linearly_to_lr0():
    got = [lr for lr, _ in lrs_of({"name": "constant", "warmup": 4}, steps=6)]
    assert got == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1, 0.1])


def test_exponential_by_final_lr_ends_at_it():
    got = [lr for lr, _ in lrs_of({"name": "exponential", "lr_final": 1e-4, "warmup": 10})]
    assert got[10] == pytest.approx(LR0)
    assert got[T] == pytest.approx(1e-4) and got[-1] == pytest.approx(1e-4)  # reached at T, then held
    assert all(a > b for a, b in zip(got[10:T], got[11:T + 1], strict=True))


def test_total_steps_in_config_overrides_the_argument():
    got = [lr for lr, _ in lrs_of({"name": "linear", "total_steps": 10}, total=1000, steps=12)]
    assert got == pytest.approx([LR0 * (1 - min(t, 10) / 10) for t in range(12)])


def test_cosine_restarts_jumps_back_at_cycle_boundaries():
    # cycles of 10, 20, 40 steps start at s = 0, 10, 30, 70; peaks lr0, lr0/2, lr0/4, lr0/8
    got = [lr for lr, _ in lrs_of({"name": "cosine_restarts", "cycle_steps": 10, "cycle_mult": 2.0,
                                   "cycle_decay": 0.5}, total=100, steps=100)]
    for start, peak in [(0, LR0), (10, LR0 / 2), (30, LR0 / 4), (70, LR0 / 8)]:
        assert got[start] == pytest.approx(peak)
        if start:
            assert got[start - 1] < 0.03 * LR0  # the end of the previous cycle is near zero
    assert got[20] == pytest.approx(LR0 / 4)  # half-way through cycle 1: (lr0/2) * (1 + cos(pi/2)) / 2


def test_onecycle_peaks_at_pct_start_and_ends_on_the_last_step():
    got = [lr for lr, _ in lrs_of({"name": "onecycle", "pct_start": 0.3}, total=100, steps=101)]
    assert got[0] == pytest.approx(LR0 / 25)
    assert max(got) == pytest.approx(LR0) and got.index(max(got)) == 29  # torch's peak: pct_start * T - 1
    assert got[99] == pytest.approx(LR0 / 25 / 1e4) and got[100] == got[99]  # reached on the last step taken


def torch_lrs(make, total: int) -> list[float]:
    """The lr of each of ``total`` steps under one of torch's own schedulers, stepped once per step."""
    opt = make_optimizer(mults=(1.0,))
    scheduler = make(opt)
    out = []
    for t in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        if t < total - 1:
            scheduler.step()
    return out


@pytest.mark.parametrize("total,pct,shape", [(10, 0.3, "cos"), (100, 0.25, "linear"), (7, 0.5, "cos"),
                                             (3, 0.3, "cos"), (50, 0.0, "cos")])
def test_onecycle_equals_torch_one_cycle_lr_at_every_step(total, pct, shape):
    expected = torch_lrs(lambda opt: torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=LR0, total_steps=total, pct_start=pct, anneal_strategy=shape, cycle_momentum=False), total)
    got = [lr for lr, in lrs_of({"name": "onecycle", "pct_start": pct, "anneal": "linear" if shape == "linear"
                                 else "cos"}, total=total, steps=total, mults=(1.0,))]
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-18)


@pytest.mark.parametrize("cycle,mult", [(5, 1), (7, 2), (3, 3)])
def test_cosine_restarts_equals_torch_warm_restarts_at_every_step(cycle, mult):
    expected = torch_lrs(lambda opt: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
        opt, T_0=cycle, T_mult=mult, eta_min=0.001), T)
    got = [lr for lr, in lrs_of({"name": "cosine_restarts", "cycle_steps": cycle, "cycle_mult": float(mult),
                                 "min_lr": 0.001}, total=T, steps=T, mults=(1.0,))]
    assert got == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("cycle,mult,restarts", [(7, 1.3, (7,)), (10, 1.2, (10, 22))])
def test_cosine_restarts_with_a_fractional_mult_restarts_on_the_step(cycle, mult, restarts):
    # cycles of 7 then 9.1 steps start at 0, 7 and 16.1; of 10, 12, 14.4 at 0, 10, 22 and 36.4: a cycle starting on
    # a whole step has its peak there, though 7 * 1.3 and 10 * 1.2 are not exact in floating point
    got = [lr for lr, in lrs_of({"name": "cosine_restarts", "cycle_steps": cycle, "cycle_mult": mult},
                                total=100, steps=30, mults=(1.0,))]
    for step in restarts:
        assert got[step] == pytest.approx(LR0) and got[step - 1] < 0.1 * LR0


def test_cosine_restarts_holds_the_final_lr_after_the_horizon():
    # total 50 with cycles of 10: s = 50 would be a restart; the run ends at the cycle's end instead
    got = [lr for lr, in lrs_of({"name": "cosine_restarts", "cycle_steps": 10}, total=50, steps=60, mults=(1.0,))]
    assert got[49] < 0.03 * LR0 and got[50:] == [0.0] * 10


def test_wsd_is_stable_then_decays():
    # warmup 0.05 * 100 = 5 steps, decay 0.2 * 100 = 20 steps at the end
    got = [lr for lr, _ in lrs_of({"name": "wsd", "warmup": 0.05, "decay": 0.2}, total=100, steps=101)]
    assert got[:5] == pytest.approx([LR0 * (t + 1) / 5 for t in range(5)])
    assert got[5:80] == pytest.approx([LR0] * 75)
    assert all(a > b for a, b in zip(got[80:], got[81:], strict=False))
    assert got[99] == pytest.approx(LR0 / 20) and got[100] == 0.0


def test_wsd_default_decay_is_a_fifth_of_training():
    got = [lr for lr, _ in lrs_of({"name": "wsd"}, total=100, steps=100)]
    assert got[79] == pytest.approx(LR0) and got[81] < LR0


def test_dotted_name_imports_a_user_function(monkeypatch):
    def halving(s: int, horizon: int, lr0: float, every: int = 10) -> float:
        return lr0 * 0.5 ** (s // every)

    module = types.ModuleType("my_schedules")
    module.halving = halving
    monkeypatch.setitem(sys.modules, "my_schedules", module)
    got = [lr for lr, _ in lrs_of({"name": "my_schedules.halving", "every": 5}, total=20, steps=20)]
    assert got == pytest.approx([LR0 * 0.5 ** (t // 5) for t in range(20)])
    with pytest.raises(ConfigError, match=r"schedule\.gamma=0\.5: unknown key.*every"):
        lrs_of({"name": "my_schedules.halving", "gamma": 0.5}, total=20)


def test_to_steps():
    assert to_steps(7, 460, "k") == 7
    assert to_steps(0.3, 460, "k") == 138
    assert to_steps(0.05, 10, "k") == 1  # halves round up
    assert to_steps(0.0, 10, "k") == 0
    assert to_steps(100.0, 10, "k") == 100
    for bad in (-1, -0.1, True, 1.5, "10", None, math.nan, math.inf):
        with pytest.raises(ConfigError, match=r"^k="):
            to_steps(bad, 10, "k")


def test_config_may_be_a_dictconfig():
    cfg = OmegaConf.create({"name": "multistep", "warmup": 0, "total_steps": None, "milestones": [5, 0.5]})
    got = [lr for lr, _ in lrs_of(cfg, total=20, steps=20)]
    assert got == pytest.approx([LR0 * 0.1 ** ((t >= 5) + (t >= 10)) for t in range(20)])


# --- PlateauLR ------------------------------------------------------------------------------------------------


def plateau(mults=(1.0, 10.0), **cfg):
    opt = make_optimizer(LR0, mults)
    sched = create_scheduler(opt, {"name": "plateau", "monitor": "val/loss", **cfg}, 100)
    assert isinstance(sched, PlateauLR)
    return opt, sched


def lrs(opt):
    return [g["lr"] for g in opt.param_groups]


def test_plateau_reduces_after_patience_plus_one_bad_observations():
    opt, sched = plateau(mode="min", patience=2, factor=0.5)
    sched.observe(1.0)  # first value: the best so far
    for _ in range(2):
        sched.observe(1.0)
        assert lrs(opt) == pytest.approx([LR0, 10 * LR0])
    sched.observe(1.0)  # third bad one in a row > patience: reduced at once, before any step()
    assert lrs(opt) == pytest.approx([LR0 / 2, 10 * LR0 / 2])
    opt.step()
    sched.step()
    assert lrs(opt) == pytest.approx([LR0 / 2, 10 * LR0 / 2])
    sched.observe(0.5)  # an improvement resets the count
    sched.observe(0.5)
    sched.observe(0.5)
    assert lrs(opt)[0] == pytest.approx(LR0 / 2)


@pytest.mark.parametrize("mode", ["max", "maximize"])
def test_plateau_mode_max(mode):
    opt, sched = plateau(mode=mode, patience=0, factor=0.5)
    for v in (0.1, 0.2, 0.3, 0.4):  # rising is improving
        sched.observe(v)
    assert lrs(opt)[0] == pytest.approx(LR0)
    sched.observe(0.35)
    assert lrs(opt)[0] == pytest.approx(LR0 / 2)


@pytest.mark.parametrize("mode", ["min", "minimize"])
def test_plateau_mode_min(mode):
    opt, sched = plateau(mode=mode, patience=0, factor=0.5)
    for v in (0.4, 0.3):
        sched.observe(v)
    assert lrs(opt)[0] == pytest.approx(LR0)
    sched.observe(0.35)
    assert lrs(opt)[0] == pytest.approx(LR0 / 2)


def test_plateau_threshold_and_nan():
    opt, sched = plateau(mode="min", patience=0, factor=0.5, threshold=0.1, threshold_mode="rel")
    sched.observe(1.0)
    sched.observe(0.95)  # better, but by less than 10%: not an improvement
    assert lrs(opt)[0] == pytest.approx(LR0 / 2)
    sched.observe(0.85)  # 15% better than the best (1.0)
    assert lrs(opt)[0] == pytest.approx(LR0 / 2)
    sched.observe(math.nan)
    assert lrs(opt)[0] == pytest.approx(LR0 / 4)

    opt, sched = plateau(mode="min", patience=0, factor=0.5, threshold=0.1, threshold_mode="abs")
    sched.observe(1.0)
    sched.observe(0.85)  # better by more than 0.1
    assert lrs(opt)[0] == pytest.approx(LR0)
    sched.observe(0.8)
    assert lrs(opt)[0] == pytest.approx(LR0 / 2)


def test_plateau_respects_min_lr_per_group():
    opt, sched = plateau(mode="min", patience=0, factor=0.1, min_lr=0.002)
    for _ in range(6):
        sched.observe(1.0)
    assert lrs(opt) == pytest.approx([0.002, 0.02])  # the x10 group bottoms out at 10 * min_lr


def test_plateau_cooldown():
    opt, sched = plateau(mode="min", patience=0, factor=0.5, cooldown=2)
    sched.observe(1.0)
    sched.observe(1.0)
    assert lrs(opt)[0] == pytest.approx(LR0 / 2)
    sched.observe(1.0)
    sched.observe(1.0)  # the two cooldown observations are not counted
    assert lrs(opt)[0] == pytest.approx(LR0 / 2)
    sched.observe(1.0)
    assert lrs(opt)[0] == pytest.approx(LR0 / 4)


def test_plateau_warmup_composes():
    opt, sched = plateau(mode="min", patience=0, factor=0.5, warmup=4)
    got = drive(opt, sched, 8, observe={0: 1.0, 1: 2.0})  # the second is bad: halved from step 2 on
    expected = [LR0 * 1 / 4, LR0 * 2 / 4, LR0 * 3 / 4 / 2, LR0 / 2, LR0 / 2, LR0 / 2, LR0 / 2, LR0 / 2]
    assert [g[0] for g in got] == pytest.approx(expected)
    assert [g[1] for g in got] == pytest.approx([10 * e for e in expected])


def test_plateau_needs_no_horizon_unless_warmup_is_a_fraction():
    opt = make_optimizer()
    assert isinstance(create_scheduler(opt, {"name": "plateau", "warmup": 3}, math.inf), PlateauLR)
    with pytest.raises(ConfigError, match="schedule.total_steps=None.*horizon is unknown"):
        create_scheduler(make_optimizer(), {"name": "plateau", "warmup": 0.1}, None)


# --- resume -----------------------------------------------------------------------------------------------------


def roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize(
    "cfg",
    [
        {"name": "cosine", "warmup": 5, "min_lr": 0.001},
        {"name": "cosine_restarts", "warmup": 0.1, "cycle_steps": 7, "cycle_mult": 1.5},
        {"name": "onecycle"},
    ],
    ids=lambda c: c["name"],
)
def test_scheduled_lr_resumes_exactly(cfg):
    opt = make_optimizer()
    full = drive(opt, create_scheduler(opt, cfg, T), T)

    opt = make_optimizer()
    sched = create_scheduler(opt, cfg, T)
    first = drive(opt, sched, 20)
    state = roundtrip({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()})
    assert not any(callable(v) for v in state["scheduler"].values())
    assert state["scheduler"]["last_epoch"] == 20

    opt2 = make_optimizer()
    sched2 = create_scheduler(opt2, cfg, T)
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    assert first + drive(opt2, sched2, T - 20) == full


def test_scheduled_lr_load_sets_the_lr_of_the_restored_step():
    opt = make_optimizer()
    sched = ScheduledLR(opt, lambda t: 1.0 / (t + 1))
    drive(opt, sched, 3)
    state = roundtrip(sched.state_dict())
    opt2 = make_optimizer()
    sched2 = ScheduledLR(opt2, lambda t: 1.0 / (t + 1))
    sched2.load_state_dict(state)  # without the optimizer's state
    assert lrs(opt2) == pytest.approx([LR0 / 4, 10 * LR0 / 4])


def test_plateau_resumes_exactly():
    cfg = {"name": "plateau", "mode": "max", "patience": 1, "factor": 0.5, "cooldown": 1, "min_lr": 0.01,
           "warmup": 3}
    # one validation every 4 steps; accuracy stalls, then improves, then stalls
    values = [0.5, 0.6, 0.6, 0.6, 0.6, 0.7, 0.7, 0.7, 0.7, 0.7]
    observe = {4 * i + 3: v for i, v in enumerate(values)}
    steps = 4 * len(values)

    opt = make_optimizer()
    full = drive(opt, create_scheduler(opt, cfg, steps), steps, observe)
    assert len({g[0] for g in full}) > 3  # warmup and several reductions happened

    k = 18
    opt = make_optimizer()
    sched = create_scheduler(opt, cfg, steps)
    first = drive(opt, sched, k, observe)
    state = roundtrip({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()})
    assert {"best", "num_bad", "cooldown_counter", "scale", "last_epoch"} <= set(state["scheduler"])

    opt2 = make_optimizer()
    sched2 = create_scheduler(opt2, cfg, steps)
    opt2.load_state_dict(state["optimizer"])
    sched2.load_state_dict(state["scheduler"])
    rest = drive(opt2, sched2, steps - k, {t - k: v for t, v in observe.items() if t >= k})
    assert first + rest == full


# --- bad config ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg,total,pattern",
    [
        ({"name": "cosine", "warmup": 50}, 50, r"schedule\.warmup=50: warmup is longer than training"),
        ({"name": "cosine", "warmup": 0.99}, 50, r"schedule\.warmup=0\.99: warmup is longer than training"),
        ({"name": "cosine", "warmup": -1}, 50, r"schedule\.warmup=-1"),
        ({"name": "cosine", "min_lr": 0.5}, 50, r"schedule\.min_lr=0\.5: above the initial lr"),
        ({"name": "cosine", "min_lr": -0.1}, 50, r"schedule\.min_lr=-0\.1"),
        ({"name": "linear", "lr_final": 0.2}, 50, r"schedule\.lr_final=0\.2: above the initial lr"),
        ({"name": "wsd", "lr_final": 1.0}, 50, r"schedule\.lr_final=1\.0: above the initial lr"),
        ({"name": "plateau", "min_lr": 0.5}, 50, r"schedule\.min_lr=0\.5: above the initial lr"),
        ({"name": "cosin"}, 50, r"schedule\.name='cosin'.*cosine.*cosine_restarts.*wsd.*plateau"),
        ({"name": None}, 50, r"schedule\.name=None.*constant"),
        ({"name": "no_such_module.fn"}, 50, r"schedule\.name='no_such_module\.fn': cannot import"),
        ({"name": "cosine", "gamma": 0.5}, 50, r"schedule\.gamma=0\.5: unknown key.*min_lr"),
        ({"name": "plateau", "power": 2}, 50, r"schedule\.power=2: unknown key.*patience"),
        ({"name": "cosine"}, None, r"schedule\.total_steps=None: the training horizon is unknown"),
        ({"name": "cosine"}, math.inf, r"schedule\.total_steps=inf: the training horizon is unknown"),
        ({"name": "cosine", "total_steps": 0}, None, r"schedule\.total_steps=0"),
        ({"name": "cosine"}, 2.5, r"schedule\.total_steps=2\.5"),
        ({"name": "exponential", "decay_rate": 0.1, "lr_final": 0.001}, 50,
         r"schedule\.decay_rate=0\.1: schedule\.lr_final=0\.001 is also set"),
        ({"name": "exponential", "lr_final": None}, 50, r"schedule\.decay_rate=None: schedule\.lr_final=None"),
        ({"name": "exponential", "decay_rate": 1.0}, 50, r"schedule\.decay_rate=1\.0"),
        ({"name": "exponential", "lr_final": 0.0}, 50, r"schedule\.lr_final=0\.0"),
        ({"name": "step", "step_size": 0}, 50, r"schedule\.step_size=0"),
        ({"name": "step"}, 50, r"schedule\.step_size=None: missing"),
        ({"name": "step", "step_size": 5, "gamma": 0.0}, 50, r"schedule\.gamma=0\.0"),
        ({"name": "step", "step_size": 5, "gamma": 1.5}, 50, r"schedule\.gamma=1\.5"),
        ({"name": "step", "step_size": True}, 50, r"schedule\.step_size=True"),
        ({"name": "multistep", "milestones": 10}, 50, r"schedule\.milestones=10"),
        ({"name": "multistep", "milestones": [10, 60]}, 50, r"schedule\.milestones=\[10, 60\]: 60 is after the end"),
        ({"name": "polynomial", "power": 0}, 50, r"schedule\.power=0"),
        ({"name": "cosine_restarts", "cycle_steps": 5, "cycle_mult": 0.5}, 50, r"schedule\.cycle_mult=0\.5"),
        ({"name": "onecycle", "pct_start": 1.0}, 50, r"schedule\.pct_start=1\.0"),
        ({"name": "onecycle", "anneal": "cosine"}, 50, r"schedule\.anneal='cosine'.*cos \| linear"),
        ({"name": "inverse_sqrt", "timescale": 2.5}, 50, r"schedule\.timescale=2\.5"),
        ({"name": "wsd", "decay": 60}, 50, r"schedule\.decay=60: decay is longer than training"),
        ({"name": "wsd", "decay_shape": "exp"}, 50, r"schedule\.decay_shape='exp'"),
        ({"name": "plateau", "mode": "up"}, 50, r"schedule\.mode='up'.*minimize"),
        ({"name": "plateau", "factor": 0.0}, 50, r"schedule\.factor=0\.0"),
        ({"name": "plateau", "patience": -1}, 50, r"schedule\.patience=-1"),
        ({"name": "plateau", "threshold_mode": "pct"}, 50, r"schedule\.threshold_mode='pct'"),
    ],
)
def test_bad_config_raises_config_error(cfg, total, pattern):
    with pytest.raises(ConfigError, match=pattern):
        create_scheduler(make_optimizer(), cfg, total)


def test_zero_optimizer_lr_is_rejected():
    with pytest.raises(ConfigError, match=r"optimizer\.lr=0\.0"):
        create_scheduler(make_optimizer(lr=0.0), {"name": "cosine"}, 10)


# --- shipped configs ----------------------------------------------------------------------------------------


def test_every_schedule_has_a_config_file():
    assert {p.stem for p in CONF.glob("*.yaml")} == {*SCHEDULES, "plateau"}


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_config_file_builds_a_scheduler(path):
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# ")  # the formula
    keys = [line for line in lines if line and not line.startswith(("#", "name:"))]
    assert keys and all(" # " in line for line in keys)  # every key is commented
    root = OmegaConf.merge({"objective": {"metric": "val/acc", "direction": "maximize"}},
                           {"schedule": OmegaConf.load(path)})
    cfg = root.schedule
    assert cfg.name == path.stem and cfg.total_steps is None and "warmup" in cfg
    opt = make_optimizer()
    sched = create_scheduler(opt, cfg, 100)
    got = drive(opt, sched, 100)
    assert all(math.isfinite(lr) and lr > 0 for g in got for lr in g)
    assert all(b == pytest.approx(10 * a) for a, b in got)
